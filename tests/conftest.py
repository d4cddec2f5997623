"""Shared fixtures. ``kafka`` starts one real broker per test session, with the same code as
``rarecvr kafka up``, in a temporary directory on free ports, and always stops it."""

from __future__ import annotations

import os
import uuid

import pytest

from deploy.kafka import Broker, fetch
from rarecvr.topics import ensure_topics
from tests.streams_harness import Workers, environment

_summary: list[str] = []


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    """A running broker with every rarecvr topic; yields its :class:`BrokerInfo`."""
    fetch()
    broker = Broker(tmp_path_factory.mktemp("kafka"), log_level="WARN")
    info = broker.start(timeout=90)
    _summary.append(f"broker: Apache Kafka {info.version} (KRaft, single node) at {info.bootstrap}")
    try:
        ensure_topics(info.bootstrap)
        yield info
    finally:
        broker.stop()


@pytest.fixture
def stack(kafka, tmp_path, monkeypatch):
    """Stream workers of one test on the session broker, with their own topic prefix."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("RARECVR_TOPIC_PREFIX", prefix)
    ensure_topics(kafka.bootstrap)
    workers = Workers(kafka.bootstrap, tmp_path, environment(prefix))
    yield kafka.bootstrap, workers, prefix + "streams"
    workers.stop_all()


@pytest.fixture
def topic_name():
    """A factory of fresh topic names, so tests sharing the broker never see each other's data."""
    return lambda prefix="t": f"test.{prefix}.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def report():
    """Lets an integration test state what it proved; printed at the end of the run."""
    return _summary.append


def pytest_collection_modifyitems(items):
    for item in items:
        if "kafka" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter, exitstatus):
    for line in _summary:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    """With RARECVR_REQUIRE_INTEGRATION set (CI), a skipped integration test fails the run."""
    if not os.environ.get("RARECVR_REQUIRE_INTEGRATION"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [
        r
        for r in (reporter.stats.get("skipped", []) if reporter else [])
        if "integration" in getattr(r, "keywords", {})
    ]
    if skipped:
        reporter.write_line(f"FAILED: {len(skipped)} integration test(s) were skipped in CI")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
