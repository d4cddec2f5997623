"""Where rarecvr keeps its state, and how a process finds the broker.

Every process reads the same two things from the environment, so that a user can point a whole
stack elsewhere with two variables:

- ``RARECVR_HOME``: the directory for local state (broker data, worker tables, model registry).
  Defaults to ``~/.rarecvr``.
- ``RARECVR_CACHE``: where the Kafka jars are cached (default ``~/.cache/rarecvr``).
- ``RARECVR_TOPIC_PREFIX``: prefix of every topic name (default ``rarecvr.``).
- ``RARECVR_BOOTSTRAP``: a Kafka bootstrap address. When unset, the address that
  ``rarecvr kafka up`` recorded under ``RARECVR_HOME`` is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class NoBrokerError(RuntimeError):
    """No bootstrap address was given and no local broker is recorded as running."""


def home() -> Path:
    """The state directory, created on first use."""
    path = Path(os.environ.get("RARECVR_HOME", Path.home() / ".rarecvr")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where downloaded artefacts (the Kafka jars) are cached, outside any checkout.

    ``RARECVR_CACHE`` if set, else ``$XDG_CACHE_HOME/rarecvr``, else ``~/.cache/rarecvr``.
    """
    if explicit := os.environ.get("RARECVR_CACHE"):
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "rarecvr"


def topic_prefix() -> str:
    """The prefix of every topic name (``RARECVR_TOPIC_PREFIX``, default ``rarecvr.``)."""
    return os.environ.get("RARECVR_TOPIC_PREFIX", "rarecvr.")


def broker_state_file() -> Path:
    """The JSON file in which ``rarecvr kafka up`` records the running local broker."""
    return home() / "kafka" / "broker.json"


def bootstrap(explicit: str | None = None) -> str:
    """The explicit bootstrap address, else ``RARECVR_BOOTSTRAP``, else the local broker's."""
    if explicit:
        return explicit
    if env := os.environ.get("RARECVR_BOOTSTRAP"):
        return env
    state = broker_state_file()
    if state.exists():
        return json.loads(state.read_text())["bootstrap"]
    raise NoBrokerError(
        "No Kafka broker to talk to: pass --bootstrap HOST:PORT, set RARECVR_BOOTSTRAP, or start "
        f"the local broker with `rarecvr kafka up` (it records its address in {state})."
    )
