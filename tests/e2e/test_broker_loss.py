"""One broker of a local three-broker cluster is killed (SIGKILL) while the simulator
produces and the worker counts: the worker goes on past the rebalance and ends exact on
/metrics, every topic it created has three replicas, and the dead-letter topic holds
only the malformed messages the simulator sent."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from tests.e2e.harness import CLI, deployment, free_port, wait_until
from tests.e2e.resilience import Simulator, _bindable, offers_counted, wait_matches_truth

pytestmark = pytest.mark.timeout(600)

BROKERS = 3
# The group notices a lost member, and the cluster a lost broker, within seconds.
ENV = {"UPSELL_GRACE": "1h", "UPSELL_SESSION_TIMEOUT": "6s"}


@dataclass(frozen=True)
class Cluster:
    data_dir: Path
    first_port: int

    @property
    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.first_port}",
            "UPSELL_DATA_DIR": str(self.data_dir),
        }

    @property
    def bootstrap(self) -> list[str]:
        # As `kafka start --brokers N` documents: node k on first port + 2 (k - 1).
        return [f"127.0.0.1:{self.first_port + 2 * k}" for k in range(BROKERS)]

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "kafka", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def broker_pid(self, node: int) -> int:
        return int((self.data_dir / "kafka" / f"node-{node}" / "broker.pid").read_text())


def free_port_run(count: int) -> int:
    """A loopback port whose next count - 1 ports are free too."""
    while True:
        port = free_port()
        if port + count <= 65536 and all(_bindable(port + i) for i in range(1, count)):
            return port


@contextmanager
def own_cluster(data_dir: Path) -> Iterator[Cluster]:
    cluster = Cluster(data_dir, free_port_run(2 * BROKERS))
    try:
        started = cluster.command("start", "--brokers", str(BROKERS))
        assert started.returncode == 0, started.stdout + started.stderr
        yield cluster
    finally:
        cluster.command("stop")


def topic_configs(
    admin: KafkaAdminClient, names: list[str], keys: list[str]
) -> dict[str, dict[str, str]]:
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, keys) for name in names],
        config_filter="all",
    )
    return {
        name: {key: entry["value"] for key, entry in entries.items()}
        for name, entries in described["topic"].items()
    }


def durability_of(bootstrap: list[str], prefix: str) -> dict[str, tuple[set[int], str]]:
    """Per topic whose name starts with prefix: the replica counts of its partitions and
    its min.insync.replicas."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        names = [name for name in admin.list_topics() if name.startswith(prefix)]
        min_isr = topic_configs(admin, names, ["min.insync.replicas"])
        return {
            topic["name"]: (
                {len(p["replica_nodes"]) for p in topic["partitions"]},
                min_isr[topic["name"]]["min.insync.replicas"],
            )
            for topic in admin.describe_topics(names)
        }
    finally:
        admin.close()


def record_count(bootstrap: list[str], topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        starts = consumer.beginning_offsets(partitions)
        return sum(end - starts[tp] for tp, end in consumer.end_offsets(partitions).items())
    finally:
        consumer.close()


def test_the_worker_counts_exact_through_the_loss_of_one_broker_of_three(tmp_path: Path) -> None:
    began = time.monotonic()
    with own_cluster(tmp_path / "cluster") as cluster:
        env = {**ENV, "KAFKA_BOOTSTRAP_SERVERS": ",".join(cluster.bootstrap)}
        with deployment(tmp_path, extra_env=env) as service:
            service.start_worker()
            worker = service.workers[0]
            simulator = Simulator(
                service, ("--count", "4000", "--seed", "31", "--rate", "800")
            ).start()
            wait_until(lambda: offers_counted(service.metrics()) > 400, 120, "counting to start")
            assert simulator.running, "the simulator ended before the broker loss"

            os.kill(cluster.broker_pid(2), signal.SIGKILL)
            killed_at = time.monotonic()

            truth = simulator.join(timeout=300)
            wait_matches_truth(service, truth, timeout=150)
            assert worker.poll() is None, "the worker died with the broker"

            # Every topic the worker and Faust created, changelogs included.
            durability = durability_of(cluster.bootstrap[:1], service.name)
            assert {
                f"{service.name}-partition-state-changelog",
                f"{service.name}-board-state-changelog",
                service.topics["rates"],
            } <= durability.keys()
            assert durability == {name: ({BROKERS}, "2") for name in durability}
            rejected = sum(n for reasons in truth["rejected"].values() for n in reasons.values())
            assert rejected > 0, "the simulator sent no malformed message to compare with"
            assert record_count(cluster.bootstrap[:1], service.topics["deadletter"]) == rejected
            status = cluster.command("status")
            assert status.returncode == 1 and "node-2: not running" in status.stdout, status.stdout
    print(
        f"\n{sum(truth['messages_sent'].values()):,} messages exact, broker 2 killed "
        f"{killed_at - began:.0f} s in; {time.monotonic() - began:.0f} s in all"
    )
