"""The user's local broker: ``rarecvr kafka up``, ``status`` and ``down``.

The broker runs detached under ``$RARECVR_HOME/kafka`` and records itself in ``broker.json``,
where every other rarecvr command finds its bootstrap address.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from deploy.kafka.broker import (
    Broker,
    BrokerError,
    BrokerInfo,
    pid_alive,
    stop_pid,
    wait_until_serving,
)
from deploy.kafka.dist import fetch
from rarecvr import settings
from rarecvr.topics import ensure_topics


def recorded() -> BrokerInfo | None:
    """The broker recorded as started, if its process is still alive."""
    state = settings.broker_state_file()
    if not state.exists():
        return None
    info = BrokerInfo(**json.loads(state.read_text()))
    if not pid_alive(info.pid):
        state.unlink()
        return None
    return info


def up(port: int | None = None, timeout: float = 60) -> tuple[BrokerInfo, bool]:
    """Start the local broker unless it runs; create the topics. Returns (info, started_now)."""
    if (info := recorded()) is not None:
        wait_until_serving(info.bootstrap, timeout, None, settings.home() / "kafka" / "server.log")
        ensure_topics(info.bootstrap)
        return info, False
    fetch()
    broker = Broker(settings.home() / "kafka")
    info = broker.start(port=port, timeout=timeout)
    try:
        ensure_topics(info.bootstrap)
    except Exception:
        broker.stop()
        raise
    settings.broker_state_file().write_text(json.dumps(asdict(info), indent=2))
    return info, True


def down(timeout: float = 20) -> BrokerInfo | None:
    """Stop the recorded broker (SIGTERM, then SIGKILL after ``timeout``); None if none ran."""
    info = recorded()
    if info is None:
        return None
    stop_pid(info.pid, timeout)
    if pid_alive(info.pid):
        raise BrokerError(f"The Kafka broker (pid {info.pid}) did not stop.")
    settings.broker_state_file().unlink(missing_ok=True)
    return info
