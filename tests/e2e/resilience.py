"""Helpers of the crash, scale-out and broker-restart tests: running the simulator beside
the workers, reading each worker's metrics, and the outputs as a reader keeps them."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Deployment, Labels, latest_by_key, read_topic

# The worker's own bookkeeping (reads, lag, alert life cycle), which a replay or a
# restart legitimately changes; every other series is a count of the stream.
NOT_COUNTS = ("upsell_events_processed_total", "upsell_consumer_lag", "upsell_alerts_total",
              "upsell_rate_drop_active")
START = "2026-11-22T00:00:00Z"  # fixed, so that two deployments see the same event times
ALL = "__all__"


@dataclass
class Simulator:
    """`upsell-stream simulate` in a thread, so that workers can be killed meanwhile."""

    service: Deployment
    args: tuple[str, ...]
    truth: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    _thread: threading.Thread | None = None

    def start(self) -> Simulator:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        truth_file = self.service.data_dir / f"{self.service.name}-truth.json"
        result = self.service.cli("simulate", "--start", START, "--truth-file",
                                  str(truth_file), *self.args, timeout=600)
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
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def counts(samples: dict[tuple[str, Labels], float]) -> dict[tuple[str, Labels], float]:
    """The series that count the stream; zero-valued ones dropped (absent means 0)."""
    return {key: value for key, value in samples.items()
            if key[0].startswith("upsell_") and not key[0].startswith(NOT_COUNTS)
            and value != 0}


def offers_counted(samples: dict[tuple[str, Labels], float]) -> float:
    return samples.get(("upsell_offers_presented_total",
                        frozenset({("channel", ALL), ("segment", ALL)})), 0.0)


def outputs(topic: str) -> dict[str, dict[str, Any]]:
    """The latest record per key, as a reader of the compacted topic keeps them, without
    the wall-clock `emitted_at`."""
    latest = latest_by_key(read_topic(topic))
    for record in latest.values():
        record.pop("emitted_at", None)
    return latest


def messages_sent(truth: dict[str, Any]) -> int:
    return int(sum(truth["messages_sent"].values()))
