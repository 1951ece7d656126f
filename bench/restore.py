"""The load half of a restart, without Kafka: `python bench/restore.py [EVENTS] [BATCH]`.

The pure core (bench/core.py) writes its customer partitions' changelog records; they are
replayed into a table's data as the batch recovery does (stream_app/runtime/recovery.py), and then
every partition's state is loaded as a restarted worker loads it (`Pipeline.load`): once
in sequence, once side by side on as many threads as there are cores, as the worker does
(stream_app/runtime/faust_app.py). Prints the records, the table entries left (chunks), the
CPU seconds of the replay and of the load, and the load's wall seconds both ways.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MemoryTable
from bench.core import PARTITIONS, run
from bench.throughput import GRACE
from stream_app.domain.fastjson import loads
from stream_app.pipeline import Pipeline
from stream_app.runtime.state_store import ChangelogRecord, PartitionStore
from stream_app.settings import Settings


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    written: list[ChangelogRecord] = []
    run(events, batch, written)
    settings = Settings.from_env({"UPSELL_GRACE": GRACE, "UPSELL_PARTITIONS": str(PARTITIONS)})
    threads = os.cpu_count() or 1
    replayed = loaded = 0.0
    wall: dict[int, float] = {}
    for loaders in (1, threads):
        table = MemoryTable()
        data = table.data
        started = time.process_time()
        for _, _, key, value in written:
            if value is None:
                data.pop(loads(key), None)
            else:
                data[loads(key)] = value
        replayed = time.process_time() - started
        entries = len(data)
        pipeline = Pipeline(
            settings,
            PartitionStore(table, keep_copy=False, keeps_entries=False),
            PartitionStore(MemoryTable()),
        )
        started, started_wall = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(max_workers=loaders) as pool:
            list(pool.map(pipeline.load, [settings.topic_events] * PARTITIONS, range(PARTITIONS)))
        wall[loaders] = time.perf_counter() - started_wall
        if loaders == 1:
            loaded = time.process_time() - started
    print(
        f"restore of {events:,} events' customer partitions: {len(written):,} changelog "
        f"records ({sum(len(k) + len(v or b'') for _, _, k, v in written) / 1e6:,.1f} MB), "
        f"{entries:,} entries left; replay {replayed:.2f} s CPU "
        f"({len(written) / max(replayed, 1e-9):,.0f} records/s), load {loaded:.2f} s CPU; "
        f"load wall {wall[1]:.2f} s in sequence, {wall[threads]:.2f} s on {threads} threads"
    )


if __name__ == "__main__":
    main()
