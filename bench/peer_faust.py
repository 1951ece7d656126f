"""Stock Faust on the preloaded events, as its users write the job: a plain agent over both
input topics that filters the offers, `group_by`s them on (channel, segment) and adds one
to a tumbling windowed Table per offer (the first configured window size; Faust's default
in-memory store with its changelog). Run by bench/peers.py:
`python -m bench.peer_faust WORK_DIR` (WORK_DIR/job.json says what to read)."""

from __future__ import annotations

import sys
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
    app = faust.App(f"bench-faust-{uuid.uuid4().hex[:8]}", broker=f"kafka://{job['bootstrap']}",
                    store="memory://", web_enabled=False, topic_partitions=PARTITIONS,
                    consumer_auto_offset_reset="earliest", datadir=str(work / "faust"))
    source = app.topic(*job["topics"], value_serializer="raw")
    # Faust derives a repartition topic's name from a single source topic only.
    by_pair = app.topic(f"{app.conf.id}-pair-repartition", internal=True,
                        partitions=PARTITIONS, value_serializer="raw")
    closed: Counter[str] = Counter()

    def on_close(key: Any, value: int) -> None:
        closed[key[0]] += value

    def event_time(event: Any) -> float:
        offer = counted_offer(event.value)
        return 0.0 if offer is None else offer[1] / 1000

    table = app.Table("counts", default=int, on_window_close=on_close)
    windows: Any = table.tumbling(timedelta(milliseconds=size_ms),
                                  expires=timedelta(milliseconds=size_ms + job["grace_ms"]))
    counts = windows.relative_to(event_time)

    def is_offer(value: bytes) -> bool:
        tally.record()
        return counted_offer(value) is not None

    def pair(value: bytes) -> str:
        offer = counted_offer(value)
        return "" if offer is None else offer[0]

    def final_counts() -> dict[str, Counter[str]]:
        by_pair = Counter(closed)
        for (key, _), value in table.data.items():
            by_pair[key] += value
        return {label: by_pair}

    tally.final_counts = final_counts

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for value in stream.filter(is_offer).group_by(pair, name="pair", topic=by_pair):
            counts[pair(value)] += 1
            tally.added()

    faust.Worker(app, loglevel="error", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
