"""The pure core's own speed, without Kafka: the ceiling of one worker.

    python bench/core.py [EVENTS] [BATCH]

The simulator's events (the same mix as bench/run.py) go through the worker's three
stages as the hot path calls them, with nothing in between: `Pipeline.validate` of every
input partition a batch at a time, `attribute` and the attributing stage's `persist` of
every events-by-customer partition a batch at a time (changelog records encoded, then
dropped), `publish` and the publishing stage's `persist` of the window partials. Prints the
CPU time per event of each stage: whatever the Kafka side costs comes on top, so events/s
here bound a worker's. The garbage collector runs with the worker's thresholds
(stream_app/runtime/gc_tuning.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka.partitioner import murmur2

from bench.common import ROOT, MemoryTable
from bench.throughput import GRACE, scenario
from stream_app.pipeline import Pipeline
from stream_app.runtime.gc_tuning import tune_collector
from stream_app.runtime.state_store import ChangelogRecord, PartitionStore
from stream_app.settings import Settings
from stream_app.tools.simulator.scenario import Simulation

PARTITIONS = 6


@dataclass(frozen=True, slots=True)
class _Record:
    offset: int
    key: bytes | None
    value: bytes | None


def _partition(key: bytes | None, fallback: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS if key else fallback % PARTITIONS


def run(events: int, batch: int, written: list[ChangelogRecord] | None = None) -> dict[str, float]:
    """CPU seconds per stage; `written` receives the customer partitions' changelog records."""
    settings = Settings.from_env({"UPSELL_GRACE": GRACE, "UPSELL_PARTITIONS": str(PARTITIONS)})
    inputs: dict[tuple[str, int], list[_Record]] = defaultdict(list)
    for n, message in enumerate(Simulation(scenario(events, 7, "offers", "purchases"))):
        topic = (
            settings.topic_offers if message.topic_kind == "offers" else settings.topic_purchases
        )
        records = inputs[(topic, _partition(message.key, n))]
        records.append(_Record(len(records), message.key, message.value))
    total = sum(len(records) for records in inputs.values())
    partition_store = PartitionStore(MemoryTable(), keep_copy=False, keeps_entries=False)
    board_store = PartitionStore(MemoryTable(), keep_copy=False)
    pipeline = Pipeline(settings, partition_store, board_store)
    seconds: dict[str, float] = defaultdict(float)
    # What the customer partitions write to their changelog (keys and values).
    changelog: dict[str, int] = defaultdict(int)

    internal: dict[int, list[_Record]] = defaultdict(list)
    for start in range(0, max(len(records) for records in inputs.values()), batch):
        started = time.process_time()
        outputs = pipeline.validate(
            {source: records[start : start + batch] for source, records in inputs.items()}
        )
        seconds["validate"] += time.process_time() - started
        for output in outputs:
            if output.topic == settings.topic_events:
                partition = (
                    output.partition if output.partition is not None else _partition(output.key, 0)
                )
                queue = internal[partition]
                queue.append(_Record(len(queue), output.key, output.value))

    partials: list[_Record] = []
    for start in range(0, max(len(queue) for queue in internal.values()), batch):
        for partition, queue in internal.items():
            if start >= len(queue):
                continue
            started = time.process_time()
            outputs = pipeline.attribute(partition, queue[start : start + batch])
            middle = time.process_time()
            pipeline.attributing.persist(partition)
            written_now = partition_store.take_outbox()
            if written is not None:
                written += written_now
            seconds["attribute"] += middle - started
            seconds["persist"] += time.process_time() - middle
            changelog["records"] += len(written_now)
            changelog["bytes"] += sum(
                len(key) + len(value or b"") for _, _, key, value in written_now
            )
            partials += [_Record(len(partials), o.key, o.value) for o in outputs]

    started = time.process_time()
    for start in range(0, len(partials), 50):
        pipeline.publish(0, partials[start : start + 50])
        pipeline.publishing.persist(0)
        board_store.take_outbox()
    seconds["publish"] = time.process_time() - started
    return {
        "events": total,
        **seconds,
        **{f"changelog {name}": float(value) for name, value in changelog.items()},
    }


@dataclass(frozen=True)
class CoreRun:
    events: int
    batch: int
    cpu_seconds: float
    # CPU seconds per stage: validate, attribute, persist, publish.
    stages: dict[str, float]
    changelog_records: int
    changelog_bytes: int

    @property
    def rate(self) -> float:
        """Events per CPU second: the most one core running the core alone can do."""
        return self.events / self.cpu_seconds

    def summary(self) -> str:
        stages = ", ".join(
            f"{name} {value / self.events * 1e6:.0f}" for name, value in self.stages.items()
        )
        return (
            f"pure core, {self.events:,} events in batches of {self.batch:,}: "
            f"{self.cpu_seconds / self.events * 1e6:.0f} us CPU per event ({stages}), "
            f"at most {self.rate:,.0f} events/s on one core; the customer partitions' "
            f"changelog: {self.changelog_records / self.events:.2f} records, "
            f"{self.changelog_bytes / self.events:,.0f} bytes per event"
        )


def timed(events: int, batch: int) -> CoreRun:
    """`run` with the worker's collector thresholds, as its own process sees them."""
    tune_collector()
    figures = run(events, batch)
    total = int(figures.pop("events"))
    records, size = figures.pop("changelog records"), figures.pop("changelog bytes")
    return CoreRun(total, batch, sum(figures.values()), figures, int(records), int(size))


def measure(events: int, batch: int) -> CoreRun:
    """`timed` in a child interpreter, so that neither the collector's thresholds nor the
    caller's heap are shared with it."""
    code = (
        "import json,dataclasses,sys; from bench.core import timed; "
        f"print(json.dumps(dataclasses.asdict(timed({events}, {batch}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return CoreRun(**json.loads(done.stdout))


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    print(timed(events, batch).summary())


if __name__ == "__main__":
    main()
