"""Helpers of the crash, scale-out and broker-restart tests: running the simulator beside
the workers, reading each worker's metrics, and the outputs as a reader keeps them."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from stream_app._engine import key_partition
from stream_app.domain.events import InvalidEvent, check_offer, parse_ts
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.totals import OFFERS_TOTAL
from stream_app.domain.windows import rfc3339
from stream_app.pipeline import window_config
from stream_app.runtime.state_store import PartitionStore
from stream_app.runtime.topics import PARTITION_TABLE
from stream_app.settings import Settings
from tests.e2e.harness import (
    CLI,
    Deployment,
    Labels,
    free_port,
    latest_by_key,
    produce,
    read_topic,
    wait_until,
)
from tests.e2e.test_simulated_truth import assert_matches_truth
from tests.unit.test_pipeline_drops import FakeTable

# The worker's own bookkeeping (reads, lag, alert life cycle), which a replay or a
# restart legitimately changes; every other series is a count of the stream.
NOT_COUNTS = (
    "upsell_events_processed_total",
    "upsell_consumer_lag",
    "upsell_alerts_total",
    "upsell_rate_drop_active",
)
START = "2026-11-22T00:00:00Z"  # fixed, so that two deployments see the same event times
ALL = "__all__"


@dataclass
class Simulator:
    """`upsell-stream simulate` in a thread, so that workers can be killed meanwhile."""

    service: Deployment
    args: tuple[str, ...]
    # Settings for the simulator only (its UPSELL_GRACE sizes its settling tail).
    env: dict[str, str] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    _thread: threading.Thread | None = None

    def start(self) -> Simulator:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        truth_file = self.service.data_dir / f"{self.service.name}-truth.json"
        result = subprocess.run(
            [*CLI, "simulate", "--start", START, "--truth-file", str(truth_file), *self.args],
            env={**self.service.env(), **self.env},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            self.error = result.stderr[-2000:]
            return
        self.truth = json.loads(result.stdout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float = 600) -> dict[str, Any]:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the simulator did not finish"
        assert self.truth, f"the simulator failed: {self.error}"
        return self.truth


def worker_metrics(port: int) -> dict[tuple[str, Labels], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def counts(samples: dict[tuple[str, Labels], float]) -> dict[tuple[str, Labels], float]:
    """The series that count the stream, zero-valued ones dropped (absent means 0), with
    `topic` labels stripped of the deployment's name so that two deployments compare."""
    # Rounded: amounts are exact micro-units, but summing several workers' floats is not.
    return {
        (name, _unprefixed(labels)): round(value, 6)
        for (name, labels), value in samples.items()
        if name.startswith("upsell_") and not name.startswith(NOT_COUNTS) and value != 0
    }


def _unprefixed(labels: Labels) -> Labels:
    return frozenset(
        (label, value.partition(".")[2] if label == "topic" else value) for label, value in labels
    )


def offers_counted(samples: dict[tuple[str, Labels], float]) -> float:
    return samples.get(
        ("upsell_offers_presented_total", frozenset({("channel", ALL), ("segment", ALL)})), 0.0
    )


def outputs(topic: str) -> dict[str, dict[str, Any]]:
    """The latest record per key, as a reader of the compacted topic keeps them, without
    the wall-clock `emitted_at`."""
    latest = latest_by_key(read_topic(topic))
    for record in latest.values():
        record.pop("emitted_at", None)
    return latest


def messages_sent(truth: dict[str, Any]) -> int:
    return int(sum(truth["messages_sent"].values()))


def free_pair() -> int:
    """A loopback port whose successor is free too (a local broker's controller takes it)."""
    while True:
        port = free_port()
        if port < 65535 and _bindable(port + 1):
            return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class OwnBroker:
    """A local broker of a test's own (to stop and start it, or to make it require SASL)."""

    data_dir: Path
    env: dict[str, str]
    # Everything its commands printed, for tests that look for secrets.
    printed: list[str] = field(default_factory=list)

    def command(self, action: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*CLI, "kafka", action],
            env={**os.environ, **self.env, "UPSELL_DATA_DIR": str(self.data_dir)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.printed += [result.stdout, result.stderr]
        return result

    def start(self) -> None:
        started = self.command("start")
        assert started.returncode == 0, started.stdout + started.stderr

    @property
    def log(self) -> str:
        return (self.data_dir / "kafka" / "broker.log").read_text(errors="replace")


@contextmanager
def own_broker(data_dir: Path, **env: str) -> Iterator[OwnBroker]:
    broker = OwnBroker(data_dir, {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_pair()}", **env})
    try:
        broker.start()
        yield broker
    finally:
        broker.command("stop")


def wait_matches_truth(service: Deployment, truth: dict[str, Any], timeout: float) -> None:
    """Until the workers' metrics equal the truth (for brokers the harness's lag check
    does not reach: it reads the default test broker)."""
    last: list[str] = []

    def matches() -> bool:
        try:
            assert_matches_truth(service, truth)
        except (AssertionError, requests.RequestException) as error:
            last[:] = [str(error)[:2000]]
            return False
        return True

    try:
        wait_until(matches, timeout, "the metrics to equal the ground truth", every=2)
    except AssertionError:
        late = {
            key: value
            for key, value in service.metrics().items()
            if key[0] == "upsell_events_late_total"
        }
        raise AssertionError(
            f"never matched the truth: {last}; late: {late}\n{state_divergence(service)}"
        ) from None


def assert_exact(service: Deployment, truth: dict[str, Any]) -> None:
    """assert_matches_truth; when it fails, also where the state went wrong."""
    try:
        assert_matches_truth(service, truth)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{state_divergence(service)}") from None


def state_divergence(service: Deployment) -> str:
    """Per partition of customers, the offers its state holds (as its changelog keeps it)
    against the valid offers of its customers in the input, each event_id once. Where
    they differ, the attributing stage or a hand-over between workers lost or doubled them;
    where they agree and the metrics do not, the loss came after it (partials, board).

    Not a replay of the events-by-customer topic: the items of a co-partitioned input
    partition for its own customers are handed over in process (stages/handoff.py) and
    never cross that topic."""
    settings = Settings.from_env(service.env())
    config = window_config(settings)
    expected: dict[int, Counter[tuple[str, ...]]] = {}
    seen: set[str] = set()
    for record in read_topic(settings.topic_offers):
        try:
            offer = check_offer(record.value)
        except InvalidEvent:
            continue
        if offer.event_id in seen:
            continue
        seen.add(offer.event_id)
        partition = key_partition(offer.customer_id.encode(), settings.partitions)
        expected.setdefault(partition, Counter())[(offer.channel, offer.segment)] += 1
    changelog = _by_partition(read_topic(f"{settings.app_id}-{PARTITION_TABLE}-changelog"))
    findings = []
    for partition in range(settings.partitions):
        table = FakeTable()
        for record in changelog.get(partition, []):
            key = json.loads(record.key)
            if record.value is None:
                table.data.pop(key, None)
            else:
                table.data[key] = record.value  # kept encoded, as the batch recovery keeps it
        kept = CustomerPartition.restore(config, PartitionStore(table).load(partition))
        held = kept.totals.counters.get(OFFERS_TOTAL, Counter())
        truth = expected.get(partition, Counter())
        differing = {
            key: (held[key], truth[key]) for key in {*held, *truth} if held[key] != truth[key]
        }
        findings.append(
            f"partition {partition}: state at offset {kept.next_offset}, "
            f"{sum(held.values())} offers of {sum(truth.values())} in the input"
            + (f"; differing (state, input): {differing}" if differing else "")
        )
    return "\n".join(findings)


def _by_partition(records: list[Any]) -> dict[int, list[Any]]:
    partitions: dict[int, list[Any]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        partitions.setdefault(record.partition, []).append(record)
    return partitions


CLOSING_AFTER_MS = 7 * 3_600_000


def close_stream(service: Deployment, truth: dict[str, Any]) -> dict[str, Any]:
    """Send one more offer, CLOSING_AFTER_MS after the stream's last event, and return the
    truth with it counted.

    It moves stream time past every window and every last-touch purchase's ts + grace, so
    that a worker with a grace longer than the simulator's settling tail (see the
    scale-out tests) decides everything the simulator's truth holds. Send it once the
    workers have caught up: whatever comes after it is late.
    """
    last = parse_ts(truth["last_ts"])
    offer = {
        "event_id": "closing",
        "offer_id": "closing",
        "customer_id": "c-closing",
        "channel": "email",
        "segment": "smb",
        "ts": last + CLOSING_AFTER_MS,
    }
    produce([(service.topics["offers"], b"c-closing", json.dumps(offer).encode())])
    closed = copy.deepcopy(truth)
    closed["offers_presented"]["email|smb"] = closed["offers_presented"].get("email|smb", 0) + 1
    campaign = closed["campaign_offers_presented"]
    campaign["__none__|__none__"] = campaign.get("__none__|__none__", 0) + 1
    closed["offers"] += 1
    closed["last_ts"] = rfc3339(last + CLOSING_AFTER_MS)
    return closed
