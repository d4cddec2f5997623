"""Command-line options shared by the commands that read a user's log or send events."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from rarecvr.logfile import UNIT_CHOICES, HistoryLog


def feature_kinds(command):
    """``--categorical`` and ``--numeric``: overrides of ``rarecvr.schema.infer``."""
    command = click.option(
        "--numeric",
        default="",
        help="Integer features to model as numbers, comma-separated (floats already are).",
    )(command)
    return click.option(
        "--categorical",
        default="",
        help="Features to hash as categories whatever their type, comma-separated (strings "
        "and integers already are).",
    )(command)


def time_unit(command):
    """``--unit``: the unit of numeric time columns (``rarecvr.logfile.millis``)."""
    return click.option(
        "--unit",
        type=click.Choice(UNIT_CHOICES),
        default="auto",
        show_default=True,
        help="Unit of numeric time columns since the Unix epoch (auto: by size; times can "
        "also be ISO-8601 or datetime strings).",
    )(command)


def history(purpose: str):
    """``--history`` (a log of past clicks, used ``purpose``) and ``--history-*``, which of its
    columns say what; the command gets them as one ``history``: a ``HistoryLog``, or None."""
    options = [
        click.option(
            "--history",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            envvar="RARECVR_HISTORY",
            help="A log of past clicks (CSV(.gz) or Parquet, one row per click, as "
            f"`rarecvr replay` reads) {purpose}.",
        ),
        click.option(
            "--history-click-time",
            default="ts_ms",
            show_default=True,
            help="History: the click time column.",
        ),
        click.option(
            "--history-conversion-time",
            default="conversion_ts_ms",
            show_default=True,
            help="History: the conversion time column (empty: no conversion).",
        ),
        click.option(
            "--history-setup",
            default="setup_id",
            show_default=True,
            help="History: the conversion setup column(s), comma-separated, as given to "
            "rarecvr replay.",
        ),
        click.option(
            "--history-advertiser",
            help="History: the advertiser column (default: advertiser_id if the log has one, "
            "else the setup), as given to rarecvr replay.",
        ),
        click.option(
            "--history-unit",
            type=click.Choice(UNIT_CHOICES),
            default="auto",
            show_default=True,
            help="History: unit of numeric time columns since the Unix epoch (auto: by size).",
        ),
    ]

    def decorate(command):
        @functools.wraps(command)
        def with_log(*args, history, **kwargs):
            columns = {name: kwargs.pop(name) for name in list(kwargs) if name in HISTORY_COLUMNS}
            return command(*args, history=history_log(history, **columns), **kwargs)

        for option in reversed(options):
            with_log = option(with_log)
        return with_log

    return decorate


HISTORY_COLUMNS = (
    "history_click_time",
    "history_conversion_time",
    "history_setup",
    "history_advertiser",
    "history_unit",
)


def history_log(
    history: Path | None,
    history_click_time: str,
    history_conversion_time: str,
    history_setup: str,
    history_advertiser: str | None,
    history_unit: str,
) -> HistoryLog | None:
    """The log the ``--history`` options name; None without ``--history``."""
    if history is None:
        return None
    setup = tuple(c.strip() for c in history_setup.split(",") if c.strip())
    return HistoryLog(
        history,
        history_click_time,
        history_conversion_time,
        setup,
        history_unit,
        history_advertiser,
    )


def events_per_record(command):
    """``--events-per-record``: how many events of a topic partition one Kafka record holds."""
    from rarecvr.produce import BATCH_EVENTS

    return click.option(
        "--events-per-record",
        type=click.IntRange(min=1),
        default=BATCH_EVENTS,
        show_default=True,
        envvar="RARECVR_EVENTS_PER_RECORD",
        help="Clicks and conversions per Kafka record, one JSON object a line (a record waits "
        "at most 0.1 s to fill); 1: one event a record, as any Kafka client sends them.",
    )(command)
