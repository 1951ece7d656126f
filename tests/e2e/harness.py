"""Running the real commands against the real local broker, and reading what they produce."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

BROKER = os.environ.get("UPSELL_TEST_BROKER", "127.0.0.1:19092")
CLI = [sys.executable, "-m", "stream_app.cli"]

Labels = frozenset[tuple[str, str]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@dataclass
class Deployment:
    """One isolated instance of the service: its own app id, topics and web port."""

    data_dir: Path
    partitions: int = 6
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    web_port: int = field(default_factory=free_port)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_ports: list[int] = field(default_factory=list)

    @property
    def topics(self) -> dict[str, str]:
        return {
            "offers": f"{self.name}.offers",
            "purchases": f"{self.name}.purchases",
            "rates": f"{self.name}.rates",
            "alerts": f"{self.name}.alerts",
            "deadletter": f"{self.name}.deadletter",
            "kpis": f"{self.name}.kpis",
        }

    def env(self, web_port: int | None = None) -> dict[str, str]:
        topics = self.topics
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": BROKER,
            "UPSELL_APP_ID": self.name,
            "UPSELL_WEB_PORT": str(web_port or self.web_port),
            "UPSELL_DATA_DIR": str(self.data_dir / self.name),
            "UPSELL_PARTITIONS": str(self.partitions),
            "UPSELL_TOPIC_OFFERS": topics["offers"],
            "UPSELL_TOPIC_PURCHASES": topics["purchases"],
            "UPSELL_TOPIC_RATES": topics["rates"],
            "UPSELL_TOPIC_ALERTS": topics["alerts"],
            "UPSELL_TOPIC_DEADLETTER": topics["deadletter"],
            "UPSELL_TOPIC_KPIS": topics["kpis"],
            # Workers' logs stay in the test's data dir; info shows rebalances in detail.
            "UPSELL_LOG_LEVEL": os.environ.get("UPSELL_TEST_LOG_LEVEL", "warn"),
        }
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- workers -------------------------------------------------------------------
    def start_worker(self, web_port: int | None = None) -> int:
        port = web_port or (self.web_port if not self.workers else free_port())
        log = open(self.data_dir / f"{self.name}-worker-{len(self.workers)}.log", "ab")
        process = subprocess.Popen(
            [*CLI, "worker"],
            env=self.env(port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(process)
        self.worker_ports.append(port)
        wait_until(lambda: self._healthy(port, process), 120, f"worker on port {port}")
        return port

    def _healthy(self, port: int, process: subprocess.Popen[bytes]) -> bool:
        if process.poll() is not None:
            raise AssertionError(f"worker exited with {process.returncode}")
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok
        except requests.RequestException:
            return False

    @staticmethod
    def _serving(port: int) -> bool:
        try:
            health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        return bool(health.get("status") == "ok")

    def stop_worker(self, index: int = -1, sig: int = signal.SIGTERM) -> int:
        process = self.workers.pop(index)
        self.worker_ports.pop(index)
        process.send_signal(sig)
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise AssertionError("worker did not stop within 60 s of SIGTERM") from None

    def stop_all(self) -> None:
        while self.workers:
            try:
                self.stop_worker()
            except AssertionError:
                pass

    # -- reading the service -------------------------------------------------------
    def metrics(self) -> dict[tuple[str, Labels], float]:
        """Every sample of every worker, summed over the workers."""
        summed: dict[tuple[str, Labels], float] = {}
        for port in self.worker_ports:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    key = (sample.name, frozenset(sample.labels.items()))
                    summed[key] = summed.get(key, 0.0) + sample.value
        return summed

    def group_lag(self) -> int:
        """Messages not yet committed by the worker group on its input and internal topics."""
        admin = KafkaAdminClient(bootstrap_servers=BROKER)
        consumer = KafkaConsumer(bootstrap_servers=BROKER)
        try:
            committed = admin.list_group_offsets(self.name).get(self.name, {})
            names = [
                self.topics["offers"],
                self.topics["purchases"],
                f"{self.name}-events-by-customer",
                f"{self.name}-window-partials",
            ]
            partitions: list[TopicPartition] = []
            for topic in names:
                known = consumer.partitions_for_topic(topic)
                if not known:
                    return -1  # metadata not there yet: say nothing about this topic's lag
                partitions.extend(TopicPartition(topic, p) for p in known)
            ends = consumer.end_offsets(partitions)
            lag = 0
            for tp, end in ends.items():
                done = committed.get(tp)
                lag += end - (done.offset if done is not None and done.offset >= 0 else 0)
            return lag
        finally:
            consumer.close()
            admin.close()

    def wait_caught_up(self, timeout: float = 180) -> None:
        """Until the group has committed everything on every stage and every worker serves
        its state (a worker just started may not hold its partitions yet while the one
        before it committed everything), twice in a row."""
        streak = [0]

        def settled() -> bool:
            try:
                lag = self.group_lag()
            except KafkaError:  # the group coordinator is still being set up
                lag = -1
            serving = lag == 0 and all(self._serving(port) for port in self.worker_ports)
            streak[0] = streak[0] + 1 if serving else 0
            return streak[0] >= 2

        wait_until(settled, timeout, "the worker group to catch up", every=0.5)


def produce(messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=BROKER, acks="all", linger_ms=5)
    try:
        for topic, key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()


def as_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def read_topic(topic: str, timeout: float = 10) -> list[Any]:
    """Every record of a topic from the beginning (records with key, value, headers)."""
    consumer = KafkaConsumer(
        bootstrap_servers=BROKER,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout * 1000),
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        records: list[Any] = []
        consumer.seek_to_beginning(*partitions)
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            batch = consumer.poll(timeout_ms=1000)
            if not batch and all(consumer.position(tp) >= end for tp, end in ends.items()):
                break
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        consumer.close()


def latest_by_key(records: list[Any]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        latest[record.key.decode()] = json.loads(record.value)
    return latest


@contextmanager
def deployment(data_dir: Path, **kwargs: Any) -> Iterator[Deployment]:
    deployed = Deployment(data_dir, **kwargs)
    try:
        yield deployed
    finally:
        deployed.stop_all()
