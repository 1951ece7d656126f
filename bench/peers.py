"""Other stream processors on the same preloaded events: Quix Streams and stock Faust.

Each peer is the job as its users write it: a `group_by` on (channel, segment) and tumbling
counts of the offers, with the framework's default state. It runs in a child process
(bench/peer_quix.py, bench/peer_faust.py) with its own consumer group, reads both input
topics from the beginning, and stops by itself once it has read every input record and
counted every offer; its clock runs from its first record to its last count. Its counts
must equal what this module counts itself on the same records, so a peer that drops or
skips records fails the benchmark instead of looking fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchError, Broker, Progress, read_every_record
from bench.throughput import GRACE, Dataset
from stream_app.domain.durations import parse_duration_ms
from stream_app.settings import Settings

GRACE_MS = parse_duration_ms(GRACE)


def window_sizes() -> list[tuple[str, int]]:
    """The worker's configured tumbling windows, as (label, length in ms)."""
    return [(size.label, size.ms) for size in Settings().windows]


def counted_offer(value: bytes | None) -> tuple[str, int] | None:
    """An offer a peer counts: its "channel|segment" and event time in ms, or None.

    What a peer checks, no more: a JSON object with an offer_id, string channel and segment,
    and a ts as epoch milliseconds or an ISO 8601 string. Duplicates count again and the
    worker's other rejections (a missing event_id, say) count too: the peers do not
    validate, deduplicate or attribute.
    """
    if value is None:
        return None
    try:
        fields = json.loads(value)
    except ValueError:
        return None
    if not isinstance(fields, dict) or "offer_id" not in fields:
        return None
    channel, segment, ts = fields.get("channel"), fields.get("segment"), fields.get("ts")
    if not isinstance(channel, str) or not isinstance(segment, str):
        return None
    if isinstance(ts, int) and not isinstance(ts, bool):
        return f"{channel}|{segment}", ts
    if isinstance(ts, str):
        try:
            return f"{channel}|{segment}", int(datetime.fromisoformat(ts).timestamp() * 1000)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Expected:
    """What every peer must find on the input topics: records, and offers by pair."""

    records: int
    offers: dict[str, int]
    # The earliest offer's event time, and from it to the latest's.
    first_ms: int
    span_ms: int

    @property
    def offer_count(self) -> int:
        return sum(self.offers.values())


def expected(broker: Broker, dataset: Dataset) -> Expected:
    """Counted by reading every input record once, with the peers' own predicate."""
    offers: Counter[str] = Counter()
    times: list[int] = []

    def count(value: bytes | None) -> None:
        offer = counted_offer(value)
        if offer is not None:
            offers[offer[0]] += 1
            times.append(offer[1])

    total, _ = read_every_record(broker.bootstrap, dataset.topics, count)
    first, last = (min(times), max(times)) if times else (sys.maxsize, -sys.maxsize)
    return Expected(total, dict(offers), first, max(0, last - first))


@dataclass(frozen=True)
class PeerRun:
    name: str
    records: int
    seconds: float
    # Each window size's counts by pair, summed over all its windows.
    counts: dict[str, dict[str, int]]
    # Offers a peer's window refused as late (Quix Streams reports them), by window size.
    late: dict[str, int]

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def run_peer(
    module: str,
    label: str,
    windows: list[tuple[str, int]],
    broker: Broker,
    dataset: Dataset,
    truth: Expected,
    progress: Progress,
    timeout: float,
) -> PeerRun:
    """Run bench/<module>.py in a child process, counting offers in tumbling windows of
    `windows`' sizes, and check its counts against `truth`."""
    work = broker.data_dir / "peers" / f"{module}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    job = {
        "bootstrap": broker.bootstrap,
        "topics": dataset.topics,
        "records": truth.records,
        "offers": truth.offer_count,
        "windows": windows,
        "grace_ms": grace_ms(truth),
        "first_ms": truth.first_ms,
        "timeout": timeout,
        "work": str(work),
    }
    (work / "job.json").write_text(json.dumps(job))
    progress(f"{label}: {truth.records:,} events", force=True)
    with open(work / "output.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", f"bench.{module}", str(work)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            # The child stops itself at `timeout`; this is for a child that hangs anyway.
            process.wait(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    result_file = work / "result.json"
    if not result_file.exists():
        raise BenchError(
            f"{label} exited with {process.returncode} and no result; see {work / 'output.log'}"
        )
    result: dict[str, Any] = json.loads(result_file.read_text())
    if not result.get("finished"):
        raise BenchError(
            f"{label} did not finish in {timeout:.0f} s: it read "
            f"{result['records']:,} of {truth.records:,} records and counted "
            f"{result['counted']:,} window updates; see {work / 'output.log'}"
        )
    run = PeerRun(
        label,
        int(result["records"]),
        float(result["seconds"]),
        result["counts"],
        result.get("late", {}),
    )
    wrong = [size for size, counts in run.counts.items() if counts != truth.offers]
    if (
        run.records != truth.records
        or sorted(run.counts) != sorted(size for size, _ in windows)
        or wrong
    ):
        raise BenchError(
            f"{label} counted wrong: {run.records:,} records of "
            f"{truth.records:,}, window sizes {sorted(run.counts)}, wrong "
            f"counts in {wrong}, {sum(run.late.values()):,} refused as late; "
            f"see {result_file}"
        )
    return run


def grace_ms(truth: Expected) -> int:
    """The peers' grace: the worker's, or the data's whole event-time span if longer.

    The worker counts every offer with its grace (it reads its partitions in step); a peer's
    windows close on the latest time seen in a partition of its repartition topic, which
    merges input partitions read at different paces, and with the worker's grace Quix
    Streams refused about a tenth of the offers as late. Exact counts need the longer grace:
    windows stay open longer, while each offer's work (one update per window) is the same.
    """
    return max(GRACE_MS, truth.span_ms + 1)


def write_result(work: Path, result: dict[str, Any]) -> None:
    """A peer's last act: its figures, written whole (a rename) for the parent to read."""
    partial = work / "result.json.partial"
    partial.write_text(json.dumps(result))
    partial.rename(work / "result.json")


class Tally:
    """A peer's side of the protocol: the job it was given, what it has read and counted,
    and its end, either when everything is counted or at the job's timeout."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.job: dict[str, Any] = json.loads((work / "job.json").read_text())
        self.windows: list[tuple[str, int]] = [(label, ms) for label, ms in self.job["windows"]]
        self.records = 0
        self.counted = 0
        self.late: Counter[str] = Counter()
        self._goal = self.job["offers"] * len(self.windows)
        self._started = 0.0
        # The latest count of each window: (size, pair, window start) -> count.
        self.latest: dict[tuple[str, str, int], int] = {}
        # Each window size's counts by pair when everything is counted; a peer whose windows
        # do not report each update replaces it with a read of its own state.
        self.final_counts: Callable[[], dict[str, Counter[str]]] = self._latest_summed
        watchdog = threading.Timer(float(self.job["timeout"]), self._give_up)
        watchdog.daemon = True
        watchdog.start()

    def record(self) -> None:
        """One input record read (the last ones may come after the last offer's count)."""
        if self.records == 0:
            self._started = time.monotonic()
        self.records += 1
        self._check()

    def update(self, size: str, pair: str, start: int, count: int) -> None:
        """A window's count after one offer."""
        self.latest[(size, pair, start)] = count
        self.counted += 1
        self._check()

    def added(self) -> None:
        """One offer added to a window whose count the peer reads from its state at the end."""
        self.counted += 1
        self._check()

    def _latest_summed(self) -> dict[str, Counter[str]]:
        counts: dict[str, Counter[str]] = {label: Counter() for label, _ in self.windows}
        for (size, pair, _), count in self.latest.items():
            counts[size][pair] += count
        return counts

    def refused(self, size: str) -> None:
        """An offer a window refused as late."""
        self.late[size] += 1
        self.counted += 1
        self._check()

    def _check(self) -> None:
        if self.counted >= self._goal and self.records >= self.job["records"]:
            seconds = time.monotonic() - self._started
            counts = self.final_counts()
            write_result(
                self.work,
                {
                    "finished": True,
                    "records": self.records,
                    "counted": self.counted,
                    "seconds": seconds,
                    "counts": {k: dict(v) for k, v in counts.items()},
                    "late": dict(self.late),
                },
            )
            # The job is done and its figures are written: nothing of the framework's
            # shutdown (commits, flushes, leaving the group) belongs to the measurement.
            os._exit(0)

    def _give_up(self) -> None:
        write_result(
            self.work, {"finished": False, "records": self.records, "counted": self.counted}
        )
        os._exit(3)
