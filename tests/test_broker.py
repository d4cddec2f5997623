"""The real broker: clients of both libraries talk to it, transactions commit, and the
`rarecvr kafka` commands start, report and stop it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import __version__ as aiokafka_version
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import __version__ as kafka_python_version
from kafka.admin import ConfigResource, ConfigResourceType

from deploy.kafka.broker import Broker, BrokerError
from deploy.kafka.dist import DistError, fetch
from rarecvr.contracts import Click, encode
from rarecvr.topics import ALL, CLICKS, TASK_ASSIGNMENTS, ensure_topics


def consume_all(bootstrap, topic, expected, isolation="read_uncommitted"):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        isolation_level=isolation,
    )
    values = []
    for record in consumer:
        values.append(record.value)
        if len(values) == expected:
            break
    consumer.close()
    return values


def test_kafka_python_produces_and_consumes(kafka, topic_name, report):
    topic = topic_name("kp")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    for i in range(100):
        producer.send(topic, key=str(i).encode(), value=f"event-{i}".encode())
    producer.flush()
    producer.close()
    values = consume_all(kafka.bootstrap, topic, 100)
    assert values == [f"event-{i}".encode() for i in range(100)]
    report(f"kafka-python {kafka_python_version}: produced and consumed 100 records")


def test_aiokafka_produces_and_consumes(kafka, topic_name, report):
    topic = topic_name("aio")

    async def roundtrip():
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(100):
                await producer.send(topic, value=f"event-{i}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        got = []
        try:
            async with asyncio.timeout(20):
                async for record in consumer:
                    got.append(record.value)
                    if len(got) == 100:
                        break
        finally:
            await consumer.stop()
        return got

    assert asyncio.run(roundtrip()) == [f"event-{i}".encode() for i in range(100)]
    report(f"aiokafka {aiokafka_version}: produced and consumed 100 records")


def test_transactional_produce_is_visible_only_when_committed(kafka, topic_name, report):
    topic = topic_name("txn")

    async def produce():
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap, transactional_id=f"{topic}-producer"
        )
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send(topic, b"committed-1")
                await producer.send(topic, b"committed-2")
            await producer.begin_transaction()
            await producer.send(topic, b"aborted")
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send(topic, b"committed-3")
        finally:
            await producer.stop()

    asyncio.run(produce())

    async def read_committed():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap, isolation_level="read_committed"
        )
        await consumer.start()
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got = []
        try:
            batches = await consumer.getmany(tp, timeout_ms=5000)
            while batches:
                got += [r.value for r in batches.get(tp, [])]
                batches = await consumer.getmany(tp, timeout_ms=1000)
        finally:
            await consumer.stop()
        return got

    assert asyncio.run(read_committed()) == [b"committed-1", b"committed-2", b"committed-3"]
    report("aiokafka: committed 2 transactions, aborted 1; read_committed saw only the committed")


def test_topics_exist_with_declared_partitions_and_compaction(kafka):
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics([t.name for t in ALL])}
        for topic in ALL:
            assert len(described[topic.name]["partitions"]) == topic.partitions, topic.name
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, TASK_ASSIGNMENTS.name)]
        )
        entries = configs["topic"][TASK_ASSIGNMENTS.name]
        assert entries["cleanup.policy"]["value"] == "compact"
    finally:
        admin.close()
    assert ensure_topics(kafka.bootstrap) == [], "a second creation must be a no-op"


def test_malformed_click_on_the_topic_is_reported_with_its_field(kafka, tmp_path):
    good = Click(event_id="c1", ts_ms=5, setup_id="s", advertiser_id="a", features={"os": "x"})
    bad = encode(good).replace(b'"ts_ms":5', b'"ts_ms":"yesterday"')
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    producer.send(CLICKS.name, key=b"c1", value=encode(good), partition=0)
    producer.send(CLICKS.name, key=b"c2", value=bad, partition=0)
    producer.flush()
    producer.close()
    result = run_cli(["peek", "clicks", "--bootstrap", kafka.bootstrap], tmp_path)
    assert result.returncode == 1
    assert "MALFORMED rarecvr.clicks[0]@1: click.ts_ms: Input should be a valid integer" in (
        result.stderr
    )
    assert "1 valid, 1 malformed" in result.stdout


def run_cli(args, home, timeout=120, env=None):
    return subprocess.run(
        [sys.executable, "-m", "rarecvr.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "RARECVR_HOME": str(home), **(env or {})},
    )


def test_kafka_up_status_down_twice_reusing_cached_jars(kafka, tmp_path):
    home = tmp_path / "home"
    for round_ in range(2):
        started = time.monotonic()
        up = run_cli(["kafka", "up"], home)
        assert up.returncode == 0, up.stderr
        assert "started at 127.0.0.1:" in up.stdout
        if round_ == 1:
            assert time.monotonic() - started < 20, "second up must serve within 20 s"
        status = run_cli(["kafka", "status"], home)
        assert status.returncode == 0 and "running at 127.0.0.1:" in status.stdout
        down = run_cli(["kafka", "down"], home)
        assert down.returncode == 0 and "Kafka stopped" in down.stdout
        assert run_cli(["kafka", "status"], home).returncode == 1


def test_a_taken_port_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"Port {port} on 127.0.0.1 is already taken"):
            Broker(tmp_path).start(port=port)


def test_missing_maven_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RARECVR_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DistError, match="`java` was not found on PATH"):
        fetch()


def test_broker_that_is_not_fetched_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("RARECVR_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BrokerError, match="rarecvr kafka fetch"):
        Broker(tmp_path / "data").start()


def test_cluster_ids_never_look_like_an_option():
    from deploy.kafka.broker import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
