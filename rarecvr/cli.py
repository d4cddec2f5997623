"""The ``rarecvr`` command: one subcommand per component.

Configuration comes from flags, and from environment variables for anything a whole stack
shares (see :mod:`rarecvr.settings`).
"""

from __future__ import annotations

import importlib

import click

from rarecvr import __version__, kafka_auth, settings

#: each stage's commands, imported when run (``rarecvr kafka up`` loads no TensorFlow), in the
#: order of the data flow
STAGE_COMMANDS = {
    "kafka": "deploy.kafka.commands:kafka",
    "simulate": "simulator.commands:simulate",
    "demo": "deploy.demo:demo",
    "replay": "streams.commands:replay",
    "worker": "streams.commands:worker",
    "train": "trainer.commands:train",
    "model": "trainer.commands:model",
    "research": "research.commands:research",
    "abtest": "abtest.commands:abtest",
    "serve": "deploy.serving.commands:serve",
}


class Commands(click.Group):
    """The composition root: stage commands loaded by name, and errors of set-up (no broker,
    credentials it refuses) that end a command with their message."""

    def list_commands(self, ctx) -> list[str]:
        return [*STAGE_COMMANDS, *super().list_commands(ctx)]

    def get_command(self, ctx, name):
        if name in STAGE_COMMANDS:
            module, attr = STAGE_COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (settings.NoBrokerError, kafka_auth.KafkaAuthError) as error:
            raise click.ClickException(str(error)) from None


@click.group(
    cls=Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="rarecvr")
def main() -> None:
    """rarecvr: streaming pCVR for rare conversions (multi-task learning, RecSys '25).

    \b
    Environment:
      RARECVR_HOME       local state: broker data, tables, model registry (~/.rarecvr)
      RARECVR_CACHE      downloaded Kafka jars (~/.cache/rarecvr)
      RARECVR_BOOTSTRAP  Kafka bootstrap address (default: the broker `kafka up` started)
      RARECVR_REGISTRY   model registry directory ($RARECVR_HOME/registry)
      RARECVR_KAFKA_SECURITY_PROTOCOL, _USERNAME, _PASSWORD_FILE, _CA_FILE
                         SASL/SCRAM over TLS (see docs/security.md)
    """


@main.command()
@click.argument("topic")
@click.option("--bootstrap", envvar="RARECVR_BOOTSTRAP", help="Kafka bootstrap address.")
@click.option("--limit", type=int, default=20, show_default=True, help="Valid events to print.")
def peek(topic: str, bootstrap: str | None, limit: int) -> None:
    """Read TOPIC (clicks, for one) from the start and check every record against its contract.

    Prints the first valid events, every malformed one with its offset and the field that is
    wrong, and a count of each. Exits 1 if any record is malformed.
    """
    from rarecvr.peek import check_topic
    from rarecvr.topics import by_name

    try:
        declared = by_name(topic)
        address = kafka_auth.connect(bootstrap)
    except (KeyError, settings.NoBrokerError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    valid = malformed = 0
    for checked in check_topic(address, declared):
        where = f"{declared.name}[{checked.partition}]@{checked.offset}"
        if checked.error is not None:
            malformed += 1
            click.echo(f"MALFORMED {where}: {checked.error}", err=True)
        else:
            valid += 1
            if valid <= limit:
                click.echo(f"{where} {checked.event.model_dump_json()}")
    click.echo(f"{declared.name}: {valid} valid, {malformed} malformed")
    if malformed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
