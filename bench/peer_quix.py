"""Quix Streams on the preloaded events, as its users write the job: both input topics,
a `group_by` on (channel, segment) and one tumbling count per configured window size,
with its default RocksDB state and changelogs. Run by bench/peers.py:
`python -m bench.peer_quix WORK_DIR` (WORK_DIR/job.json says what to read)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from quixstreams import Application

from bench.peers import Tally, counted_offer


def main(work: Path) -> None:
    tally = Tally(work)
    job = tally.job
    app = Application(
        broker_address=job["bootstrap"],
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=str(work / "state"),
        loglevel="WARNING",
    )

    def parsed(value: bytes) -> dict[str, Any] | None:
        tally.record()
        offer = counted_offer(value)
        return None if offer is None else {"pair": offer[0], "ts": offer[1]}

    first, *others = [
        app.dataframe(app.topic(name, value_deserializer="bytes")) for name in job["topics"]
    ]
    for other in others:
        first = first.concat(other)
    offers = first.apply(parsed).filter(lambda offer: offer is not None)
    offers = offers.set_timestamp(lambda value, key, timestamp, headers: value["ts"])
    grouped = offers.group_by("pair")
    for label, ms in tally.windows:

        def late(
            value: Any,
            key: Any,
            timestamp_ms: int,
            late_by_ms: int,
            start: int,
            end: int,
            store_name: str,
            topic: str,
            partition: int,
            offset: int,
            size: str = label,
        ) -> bool:
            tally.refused(size)
            return False  # counted here; no log line per late offer

        def counted(
            value: dict[str, Any], key: Any, timestamp: int, headers: Any, size: str = label
        ) -> None:
            tally.update(size, str(key), int(value["start"]), int(value["value"]))

        (
            grouped.tumbling_window(
                ms, grace_ms=job["grace_ms"], name=f"count-{label}", on_late=late
            )
            .count()
            .current()
            .update(counted, metadata=True)
        )
    app.run()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
