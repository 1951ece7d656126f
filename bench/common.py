"""What every part of the benchmark shares: the broker, topics, workers, progress, metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from stream_app.tools.local_kafka import BrokerPaths, running_pid
from stream_app.tools.processes import stop_children
from tests.e2e import harness
from tests.e2e.harness import free_port

CLI = [sys.executable, "-m", "stream_app.cli"]
ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 6


def read_every_record(
    bootstrap: str,
    topics: Sequence[str],
    each: Callable[[bytes | None], object],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, float]:
    """kafka-python reads every record of the topics (PARTITIONS partitions each) from the
    beginning to the end offsets, handing each value to `each`: the records read and the
    seconds spent reading them (the offsets' lookup aside)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        total = sum(consumer.end_offsets(partitions).values())
        seen = 0
        started = time.monotonic()
        while seen < total:
            for records in consumer.poll(timeout_ms=1000, max_records=10_000).values():
                for record in records:
                    each(record.value)
                seen += len(records)
            if progress is not None:
                progress(seen, total)
        return total, time.monotonic() - started
    finally:
        consumer.close()


class BenchError(RuntimeError):
    """The benchmark could not run (not: it ran slowly); the message is one line."""


class Progress:
    """One status line, rewritten in place on a terminal, printed every few seconds elsewhere."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = 0.0
        self._width = 0

    def __call__(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self._tty:
            if force or now - self._last >= 0.2:
                sys.stderr.write("\r" + text.ljust(self._width))
                sys.stderr.flush()
                self._width = len(text)
                self._last = now
        elif force or now - self._last >= 5.0:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
            self._last = now

    def done(self, text: str) -> None:
        if self._tty:
            sys.stderr.write("\r" + " " * self._width + "\r")
            self._width = 0
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """The end-to-end tests' wait, failing the benchmark with a BenchError."""
    try:
        return harness.wait_until(check, timeout, what, every)
    except AssertionError as error:
        raise BenchError(str(error)) from None


@dataclass
class Broker:
    """The local broker the benchmark runs on, started with the project's own command."""

    bootstrap: str
    data_dir: Path
    started_here: bool = False

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "UPSELL_DATA_DIR": str(self.data_dir),
        }

    def start(self) -> None:
        status = subprocess.run(
            [*CLI, "kafka", "status"], env=self._env(), capture_output=True, text=True, check=False
        )
        if status.returncode == 0 and status.stdout.startswith("running"):
            return
        started = subprocess.run(
            [*CLI, "kafka", "start"],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if started.returncode != 0:
            raise BenchError(f"could not start the local broker: {started.stderr.strip()}")
        self.started_here = True

    def stop(self) -> None:
        subprocess.run(
            [*CLI, "kafka", "stop"], env=self._env(), capture_output=True, timeout=120, check=False
        )

    def admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(bootstrap_servers=self.bootstrap)

    def cpu_seconds(self) -> float:
        """CPU time the broker process has used so far; 0 for a broker not started from
        `data_dir` (one given by --bootstrap alone), whose process is not known here."""
        pid = running_pid(BrokerPaths.under(self.data_dir))
        return cpu_seconds_of(pid) if pid is not None else 0.0

    def end_offsets(self, topics: list[str]) -> dict[TopicPartition, int]:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            partitions: list[TopicPartition] = []
            for topic in topics:
                known = consumer.partitions_for_topic(topic)
                if not known:
                    return {}
                partitions.extend(TopicPartition(topic, p) for p in known)
            return dict(consumer.end_offsets(partitions))
        finally:
            consumer.close()


@dataclass
class Deployment:
    """One isolated instance of the service: its own group, internal and output topics."""

    broker: Broker
    offers_topic: str
    purchases_topic: str
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    @property
    def stage_topics(self) -> list[str]:
        return [
            self.offers_topic,
            self.purchases_topic,
            f"{self.name}-events-by-customer",
            f"{self.name}-window-partials",
        ]

    def env(self, port: int) -> dict[str, str]:
        out = {key: f"{self.name}.{key}" for key in ("rates", "alerts", "deadletter", "kpis")}
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "UPSELL_APP_ID": self.name,
            "UPSELL_WEB_PORT": str(port),
            "UPSELL_DATA_DIR": str(self.broker.data_dir / "workers" / self.name),
            "UPSELL_PARTITIONS": str(PARTITIONS),
            "UPSELL_TOPIC_OFFERS": self.offers_topic,
            "UPSELL_TOPIC_PURCHASES": self.purchases_topic,
            "UPSELL_TOPIC_RATES": out["rates"],
            "UPSELL_TOPIC_ALERTS": out["alerts"],
            "UPSELL_TOPIC_DEADLETTER": out["deadletter"],
            "UPSELL_TOPIC_KPIS": out["kpis"],
            "UPSELL_LOG_LEVEL": os.environ.get("UPSELL_BENCH_LOG_LEVEL", "warn"),
            **self.extra_env,
        }

    def start_worker(self) -> int:
        port = free_port()
        log_dir = self.broker.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{self.name}-worker-{len(self.workers)}.log", "ab") as log:
            process = subprocess.Popen(
                [*CLI, "worker"], env=self.env(port), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        self.workers.append(process)
        self.ports.append(port)
        return port

    def health(self, index: int) -> dict[str, Any] | None:
        process = self.workers[index]
        if process.poll() is not None:
            raise BenchError(
                f"worker {index} of {self.name} exited with {process.returncode}; "
                f"see {self.broker.data_dir / 'logs'}"
            )
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports[index]}/healthz", timeout=2
            ) as response:
                return dict(json.loads(response.read()))
        except OSError:
            return None

    def events_in(self) -> int:
        return sum(
            int((self.health(i) or {}).get("events_in", 0)) for i in range(len(self.workers))
        )

    def rss_bytes(self) -> list[int]:
        return [rss_of(process.pid) for process in self.workers]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds_of(process.pid) for process in self.workers)

    def metrics_text(self, index: int, timeout: float = 10) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.ports[index]}/metrics", timeout=timeout
        ) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        stop_children(self.workers, timeout_s=60)
        self.workers.clear()
        self.ports.clear()


class LagReader:
    """Messages the group has not committed on its input and internal topics."""

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self._admin = deployment.broker.admin()
        self._consumer = KafkaConsumer(bootstrap_servers=deployment.broker.bootstrap)
        self._partitions: list[TopicPartition] = []

    def lag(self) -> int:
        """The group's lag, or -1 while the topics or the group are not there yet."""
        name = self._deployment.name
        try:
            if not self._partitions:
                partitions: list[TopicPartition] = []
                for topic in self._deployment.stage_topics:
                    known = self._consumer.partitions_for_topic(topic)
                    if not known:
                        return -1
                    partitions.extend(TopicPartition(topic, p) for p in known)
                self._partitions = partitions
            committed = self._admin.list_group_offsets(name).get(name, {})
            ends = self._consumer.end_offsets(self._partitions)
        except KafkaError:
            return -1
        lag = 0
        for tp, end in ends.items():
            done = committed.get(tp)
            lag += end - (done.offset if done is not None and done.offset >= 0 else 0)
        return lag

    def close(self) -> None:
        self._consumer.close()
        self._admin.close()


def rss_of(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process in bytes (Linux); `field="VmHWM"`: its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds_of(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far (Linux). On a shared
    machine this moves far less than wall time: CPU per event compares runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command's closing parenthesis: state is field 3, utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent busy so far, whoever used it (Linux):
    beside a run's own CPU, what other processes took of the cores meanwhile."""
    # The first line of /proc/stat: "cpu" and the ticks of user, nice, system, idle,
    # iowait, irq, softirq, steal (guest time is counted within user already).
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_samples(
    text: str, names: set[str]
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] not in names:
            continue
        labels = frozenset(_LABEL.findall(match["labels"]))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


ALL = "__all__"


def _rolled_up(by_pair: dict[str, float]) -> dict[tuple[str, str], float]:
    rolled: dict[tuple[str, str], float] = {}
    for key, value in by_pair.items():
        channel, segment = key.split("|")
        for pair in ((channel, segment), (channel, ALL), (ALL, segment), (ALL, ALL)):
            rolled[pair] = rolled.get(pair, 0.0) + value
    return rolled


def truth_mismatches(deployment: Deployment, truth: dict[str, Any]) -> list[str]:
    """Where the workers' summed counters differ from the simulator's truth (empty: exact)."""
    names = {
        "upsell_offers_presented_total",
        "upsell_conversions_total",
        "upsell_revenue_total",
        "upsell_events_duplicate_total",
        "upsell_events_rejected_total",
    }
    summed: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for index in range(len(deployment.workers)):
        for key, value in parse_samples(deployment.metrics_text(index), names).items():
            summed[key] = summed.get(key, 0.0) + value

    def by(name: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {
            tuple(dict(key)[label] for label in labels): value
            for (sample, key), value in summed.items()
            if sample == name
        }

    problems = []
    pair = ("channel", "segment")
    checks: list[tuple[str, dict[tuple[str, ...], float], Any]] = [
        (
            "offers",
            by("upsell_offers_presented_total", *pair),
            _rolled_up(truth["offers_presented"]),
        ),
        ("conversions", by("upsell_conversions_total", *pair), _rolled_up(truth["conversions"])),
        (
            "duplicates",
            by("upsell_events_duplicate_total", "topic"),
            {(topic,): n for topic, n in truth["duplicates"].items() if n},
        ),
        (
            "rejected",
            by("upsell_events_rejected_total", "topic", "reason"),
            {
                (topic, reason): n
                for topic, reasons in truth["rejected"].items()
                for reason, n in reasons.items()
                if n
            },
        ),
    ]
    for what, seen, expected in checks:
        if seen != expected:
            problems.append(what)
    revenue = by("upsell_revenue_total", *pair)
    expected_revenue = _rolled_up(truth["revenue"])
    if revenue.keys() != expected_revenue.keys() or any(
        round(revenue[key], 2) != round(value, 2) for key, value in expected_revenue.items()
    ):
        problems.append("revenue")
    return problems


class MemoryTable:
    """What PartitionStore needs of a Faust table, for the benchmarks without Kafka."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
