"""Command-line options shared by every command that reads a user's log."""

from __future__ import annotations

import click

from rarecvr.logfile import UNIT_CHOICES


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
