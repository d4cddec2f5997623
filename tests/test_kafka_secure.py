"""SASL/SCRAM over TLS: ``rarecvr kafka up --secure`` and every kind of client of it.

The broker here is the one ``rarecvr kafka up --secure`` starts (its own RARECVR_HOME), so the
in-process clients find its settings in ``broker.json`` and the worker process takes them from
the environment ``kafka up`` prints.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from deploy.kafka import local
from rarecvr import kafka_auth
from stabilizer.reader import AssignmentReader
from tests.streams_harness import Workers, assert_matches_batch, environment, send, wait_caught_up

CLIENT_VARIABLES = [
    "RARECVR_BOOTSTRAP",
    "RARECVR_KAFKA_SECURITY_PROTOCOL",
    "RARECVR_KAFKA_SASL_MECHANISM",
    "RARECVR_KAFKA_USERNAME",
    "RARECVR_KAFKA_PASSWORD",
    "RARECVR_KAFKA_PASSWORD_FILE",
    "RARECVR_KAFKA_CA_FILE",
]


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    """A SASL_SSL-only broker started as ``rarecvr kafka up --secure`` starts it."""
    home = tmp_path_factory.mktemp("secure-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RARECVR_HOME", str(home))
        mp.setenv("RARECVR_TOPIC_PREFIX", "rarecvr.")
        for name in CLIENT_VARIABLES:
            mp.delenv(name, raising=False)
        info, started = local.up(timeout=90, secure=True)
        assert started and info.security["protocol"] == "SASL_SSL"
        try:
            yield info
        finally:
            local.down()


def test_a_plaintext_client_of_the_secure_broker_is_told_to_use_sasl_ssl(secure):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RARECVR_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
        with pytest.raises(kafka_auth.KafkaAuthError, match="SECURITY_PROTOCOL=SASL_SSL"):
            kafka_auth.check(secure.bootstrap, timeout=10)


def test_a_wrong_password_ends_a_worker_at_start_with_the_reason(secure, tmp_path):
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password")
    env = environment("rarecvr.") | local.client_environment(secure)
    env["RARECVR_KAFKA_PASSWORD_FILE"] = str(wrong)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "rarecvr.cli", "worker", "--data-dir", str(tmp_path / "w")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "refused user 'rarecvr' (SCRAM-SHA-512)" in result.stderr
    assert time.monotonic() - started < 60  # told at start, not after the clients' retries


def test_events_are_labeled_and_tasks_read_over_sasl_ssl_end_to_end(secure, tmp_path, report):
    """kafka-python (the producer, the assignment reader), Faust and aiokafka (the worker)."""
    kafka_auth.check(secure.bootstrap)  # the settings recorded by `kafka up --secure`
    assert kafka_auth.auth_for(secure.bootstrap).secure
    send(secure.bootstrap, 3_000, malformed=0.05)
    env = environment("rarecvr.") | local.client_environment(secure)
    workers = Workers(secure.bootstrap, tmp_path, env)
    try:
        workers.start("w1")
        wait_caught_up(secure.bootstrap, "rarecvr.streams", workers)
        truth = assert_matches_batch(secure.bootstrap, workers, "w1")
        reader = AssignmentReader(secure.bootstrap).start()
        try:
            assert reader.wait_ready(60)
            assert len(reader.snapshot()) > 0
        finally:
            reader.stop()
    finally:
        workers.stop_all()
    report(f"kafka --secure: {len(truth)} labels over SASL_SSL equal batch")
