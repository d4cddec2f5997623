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


def up(
    port: int | None = None, timeout: float = 60, secure: bool = False
) -> tuple[BrokerInfo, bool]:
    """Start the local broker unless it runs; create the topics. Returns (info, started_now).

    ``secure``: a SASL_SSL listener with one SCRAM user; local clients find its settings in
    ``broker.json``, others take them from the environment (:func:`client_environment`)."""
    if (info := recorded()) is not None:
        if bool(info.security) != secure:
            raise BrokerError(
                f"The local broker already runs {'with' if info.security else 'without'} "
                f"--secure at {info.bootstrap}: stop it first (`rarecvr kafka down`)."
            )
        wait_until_serving(info.bootstrap, timeout, None, settings.home() / "kafka" / "server.log")
        ensure_topics(info.bootstrap)
        return info, False
    fetch()
    broker = Broker(settings.home() / "kafka", secure=secure)
    info = broker.start(port=port, timeout=timeout)
    state = settings.broker_state_file()
    state.touch(mode=0o600)
    state.write_text(json.dumps(asdict(info), indent=2))  # before the topics: their credentials
    try:
        ensure_topics(info.bootstrap)
    except Exception:
        broker.stop()
        state.unlink(missing_ok=True)
        raise
    return info, True


def client_environment(info: BrokerInfo) -> dict[str, str]:
    """The environment a client on another shell or host needs to reach ``info``'s broker."""
    env = {"RARECVR_BOOTSTRAP": info.bootstrap}
    if info.security:
        env |= {
            "RARECVR_KAFKA_SECURITY_PROTOCOL": info.security["protocol"],
            "RARECVR_KAFKA_SASL_MECHANISM": info.security["mechanism"],
            "RARECVR_KAFKA_USERNAME": info.security["username"],
            "RARECVR_KAFKA_PASSWORD_FILE": info.security["password_file"],
            "RARECVR_KAFKA_CA_FILE": info.security["ca_file"],
        }
    return env


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
