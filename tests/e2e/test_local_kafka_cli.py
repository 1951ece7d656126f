"""`upsell-stream kafka start|stop|status` and `topics create`, run for real.

Uses its own free ports and data directory, so a broker on 9092 (or the e2e session
broker) is never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from stream_app.runtime.kafka_clients import make_producer
from stream_app.runtime.topics import topic_specs
from stream_app.settings import Settings
from tests.e2e.harness import free_port, wait_until
from tests.e2e.resilience import free_pair
from tests.e2e.test_broker_loss import free_port_run, topic_configs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ADDRESS = f"127.0.0.1:{free_pair()}"
_SCRIPT = Path(sys.executable).with_name("upsell-stream")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "stream_app.cli"]


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def java_processes_naming(path: Path) -> list[int]:
    """Live java processes whose command line mentions path (zombies do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if (
            state != "Z"
            and args
            and args[0].endswith(b"java")
            and any(str(path).encode() in arg for arg in args)
        ):
            found.append(int(entry.name))
    return found


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    data_dir = tmp_path.resolve()
    environment = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": ADDRESS,
        "UPSELL_DATA_DIR": str(data_dir),
    }
    try:
        yield environment
    finally:
        # Whatever failed above, leave no broker behind.
        cli(environment, "kafka", "stop", timeout=120)


def test_start_status_topics_produce_consume_stop(env: dict[str, str]) -> None:
    data_dir = Path(env["UPSELL_DATA_DIR"])
    settings = Settings.from_env(env)

    status = cli(env, "kafka", "status")
    assert (status.returncode, status.stdout) == (3, "not running\n")

    began = time.monotonic()
    first = cli(env, "kafka", "start", timeout=400)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"on {ADDRESS}" in first.stdout
    assert time.monotonic() - began < 400

    second = cli(env, "kafka", "start")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already running" in second.stdout

    status = cli(env, "kafka", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith("running (pid ")
    assert f"on {ADDRESS}" in status.stdout
    assert (data_dir / "kafka" / "broker.log").stat().st_size > 0, "the broker logs nothing"

    created = cli(env, "topics", "create", timeout=90)
    assert created.returncode == 0, created.stdout + created.stderr
    specs = topic_specs(settings)
    assert created.stdout.count(": created") == len(specs)

    admin = KafkaAdminClient(bootstrap_servers=[ADDRESS])
    try:
        names = [spec.name for spec in specs]
        described = {topic["name"]: topic for topic in admin.describe_topics(names)}
        configs = topic_configs(admin, names, ["cleanup.policy", "min.insync.replicas"])
    finally:
        admin.close()
    policies = {name: entries["cleanup.policy"] for name, entries in configs.items()}
    for spec in specs:
        assert len(described[spec.name]["partitions"]) == spec.partitions, spec.name
        assert policies[spec.name] == spec.config.get("cleanup.policy", "delete"), spec.name
        assert {
            len(partition["replica_nodes"]) for partition in described[spec.name]["partitions"]
        } == {1}, spec.name
        assert configs[spec.name]["min.insync.replicas"] == "1", spec.name
    assert len(described[settings.topic_partials]["partitions"]) == 1
    assert policies[settings.topic_rates] == "compact"
    assert policies[settings.topic_kpis] == "compact"
    assert policies[settings.topic_partials] == "delete"

    again = cli(env, "topics", "create", timeout=90)
    assert again.returncode == 0, again.stdout + again.stderr
    assert ": created" not in again.stdout
    assert again.stdout.count(": already there") == len(specs)

    producer = make_producer(settings, acks="all")
    value = json.dumps({"event_id": "e2e-1", "probe": True}).encode()
    try:
        sent = producer.send(settings.topic_offers, key=b"c1", value=value).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=[ADDRESS], enable_auto_commit=False)
    try:
        partition = TopicPartition(settings.topic_offers, sent.partition)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        deadline = time.monotonic() + 30
        received: list[bytes] = []
        while not received and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                received.extend(record.value for record in records)
    finally:
        consumer.close()
    assert received[:1] == [value]

    stopped = cli(env, "kafka", "stop", timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert stopped.stdout.startswith("stopped")
    assert java_processes_naming(data_dir) == []
    assert not (data_dir / "kafka" / "broker.pid").exists()

    again_stopped = cli(env, "kafka", "stop")
    assert (again_stopped.returncode, again_stopped.stdout) == (0, "not running\n")
    status = cli(env, "kafka", "status")
    assert (status.returncode, status.stdout) == (3, "not running\n")


def test_topics_create_without_a_broker_says_so_in_one_line(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": address, "UPSELL_DATA_DIR": str(tmp_path)}
    began = time.monotonic()
    result = cli(env, "topics", "create", timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot reach Kafka at {address}" in result.stderr
    assert "upsell-stream kafka start" in result.stderr
    assert time.monotonic() - began < 40


def test_a_cluster_of_three_brokers_starts_restarts_a_lost_one_and_stops(
    env: dict[str, str],
) -> None:
    first_port = free_port_run(6)
    env = {**env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{first_port}"}
    data_dir = Path(env["UPSELL_DATA_DIR"])
    nodes = [f"127.0.0.1:{first_port + 2 * k}" for k in range(3)]

    started = cli(env, "kafka", "start", "--brokers", "3", timeout=400)
    assert started.returncode == 0, started.stdout + started.stderr
    again = cli(env, "kafka", "start", "--brokers", "3")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout
    single = cli(env, "kafka", "start")
    assert single.returncode == 1
    assert single.stderr.count("\n") == 1 and "stop` it first" in single.stderr, single.stderr
    status = cli(env, "kafka", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert [line.split(" on ")[-1] for line in status.stdout.splitlines()] == nodes

    settings = Settings.from_env(env)
    created = cli(env, "topics", "create", timeout=90)
    assert created.returncode == 0, created.stdout + created.stderr
    names = [spec.name for spec in topic_specs(settings)]
    admin = KafkaAdminClient(bootstrap_servers=nodes)
    try:
        assert len(admin.describe_cluster()["brokers"]) == 3
        described = admin.describe_topics(names)
        configs = topic_configs(admin, names, ["min.insync.replicas"])
    finally:
        admin.close()
    assert {
        topic["name"]: {len(partition["replica_nodes"]) for partition in topic["partitions"]}
        for topic in described
    } == {name: {3} for name in names}
    assert configs == {name: {"min.insync.replicas": "2"} for name in names}

    lost = int((data_dir / "kafka" / "node-3" / "broker.pid").read_text())
    os.kill(lost, signal.SIGKILL)
    wait_until(lambda: lost not in java_processes_naming(data_dir), 30, "the kill")
    status = cli(env, "kafka", "status")
    assert status.returncode == 1, status.stdout + status.stderr
    assert "node-3: not running" in status.stdout
    restarted = cli(env, "kafka", "start", "--brokers", "3", timeout=200)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert cli(env, "kafka", "status").returncode == 0

    stopped = cli(env, "kafka", "stop", timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert java_processes_naming(data_dir) == []
    assert list((data_dir / "kafka").glob("node-*/broker.pid")) == []
    status = cli(env, "kafka", "status")
    assert (status.returncode, status.stdout) == (3, "not running\n")
