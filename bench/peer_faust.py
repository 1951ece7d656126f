"""Stock Faust on the preloaded events, as its users write the job: a plain agent over both
input topics forwards the offers keyed by (channel, segment) to a repartition topic (what
`group_by` does), and a plain agent on that topic adds one to a tumbling windowed Table per
offer (the first configured window size; Faust's default
in-memory store with its changelog). Run by bench/peers.py:
`python -m bench.peer_faust WORK_DIR` (WORK_DIR/job.json says what to read)."""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust

from bench.common import PARTITIONS
from bench.peers import Tally, counted_offer


def main(work: Path) -> None:
    tally = Tally(work)
    job = tally.job
    # One table: the stock-Faust row of the comparison is one windowed `+=` per offer.
    [(label, size_ms)] = tally.windows
    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{job['bootstrap']}",
        store="memory://",
        web_enabled=False,
        topic_partitions=PARTITIONS,
        consumer_auto_offset_reset="earliest",
        datadir=str(work / "faust"),
    )
    source = app.topic(*job["topics"], value_serializer="raw")
    # The offers keyed by (channel, segment), as `group_by` would make it.
    by_pair = app.topic(
        f"{app.conf.id}-pair-repartition",
        internal=True,
        partitions=PARTITIONS,
        key_serializer="json",
        value_serializer="raw",
    )
    closed: Counter[str] = Counter()

    def on_close(key: Any, value: int) -> None:
        closed[key[0]] += value

    def event_time(event: Any) -> float:
        offer = counted_offer(event.value)
        return 0.0 if offer is None else offer[1] / 1000

    # Faust expires a window against the wall clock, not the stream's time, and calls
    # on_window_close only for windows later than the last closed one: its windows must
    # outlive the run for its table to hold every count (the data lies in the past).
    age_ms = max(0, int(time.time() * 1000) - job["first_ms"])
    table = app.Table("counts", default=int, on_window_close=on_close)
    windows: Any = table.tumbling(
        timedelta(milliseconds=size_ms),
        expires=timedelta(milliseconds=size_ms + job["grace_ms"] + age_ms + 86_400_000),
    )
    counts = windows.relative_to(event_time)

    def final_counts() -> dict[str, Counter[str]]:
        summed = Counter(closed)
        for (key, _), value in table.data.items():
            summed[key] += value
        return {label: summed}

    tally.final_counts = final_counts

    # Two plain agents: `stream.filter(...).group_by(...)` would forward every record, the
    # purchases too, since Faust runs a stream's processors after the repartition.
    @app.agent(source)
    async def rekey(stream: Any) -> None:
        async for value in stream:
            tally.record()
            offer = counted_offer(value)
            if offer is not None:
                await by_pair.send(key=offer[0], value=value)

    @app.agent(by_pair)
    async def count(stream: Any) -> None:
        async for pair, _offer in stream.items():
            counts[pair] += 1
            tally.added()

    faust.Worker(app, loglevel="error", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
