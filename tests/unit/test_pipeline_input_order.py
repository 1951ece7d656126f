"""The input partitions' event-time order when a pass of the hot path takes longer than a
fetch round: a worker catching up a backlog (after a restart, on a loaded machine) hands
over batches fetched seconds earlier, and a partition whose last fetch found it caught up
may have had records written since. Until a fetch of it answers again it holds the others
back, however long that takes; had it stopped holding them after a fixed wait, the others'
waiting records (a whole fetch of them, hours of event time in a backlog) would move
stream time past its own next records, and those would count as late."""

from __future__ import annotations

import json

from stream_app.domain.totals import LATE_TOTAL
from stream_app.settings import Settings
from tests.unit.in_process import InProcessWorker
from tests.unit.test_pipeline_drops import FakeRecord

MINUTE = 60_000
T0 = 1_795_305_600_000  # 2026-11-22T00:00:00Z
SETTINGS = Settings(partitions=2)
A = (SETTINGS.topic_offers, 0)
B = (SETTINGS.topic_offers, 1)


def offers(source: tuple[str, int], minutes: range) -> list[FakeRecord]:
    """One offer a minute of event time, at offsets counted from the first minute."""
    name = f"{source[0]}-{source[1]}"
    return [
        FakeRecord(
            minute,
            f"{name}-c{minute}".encode(),
            json.dumps(
                {
                    "event_id": f"{name}-e{minute}",
                    "offer_id": f"{name}-o{minute}",
                    "customer_id": f"{name}-c{minute}",
                    "channel": "email",
                    "segment": "smb",
                    "ts": T0 + minute * MINUTE,
                }
            ).encode(),
        )
        for minute in minutes
    ]


def late(worker: InProcessWorker) -> int:
    return sum(sum(p.totals[LATE_TOTAL].values()) for p in worker.pipeline.partitions.values())


def offers_counted(worker: InProcessWorker) -> int:
    return sum(sum(p.totals["offers"].values()) for p in worker.pipeline.partitions.values())


def test_a_caught_up_partition_holds_the_others_until_its_next_fetch_answers() -> None:
    worker = InProcessWorker(SETTINGS)
    # Both partitions' first fetches, each found caught up when it answered.
    worker.validate({A: offers(A, range(10)), B: offers(B, range(10))}, {A: False, B: False}, 100.0)
    # A pass that took 2.5 s: B's next fetch (three hours of event time written meanwhile)
    # is handed over; A's has not answered yet, so A's records of those hours are unknown.
    worker.validate({B: offers(B, range(10, 190))}, {A: False, B: False}, 102.5)
    # A's answer comes: the same hours.
    worker.validate({A: offers(A, range(10, 190))}, {A: False, B: False}, 102.6)
    # A fetch of each answers with nothing new: the last records may leave.
    worker.validate({}, {A: False, B: False}, 102.7, quiet=frozenset({A, B}))
    assert offers_counted(worker) == 2 * 190
    # The stream was written in event-time order: nothing in it is late.
    assert late(worker) == 0


def test_a_partition_found_empty_by_a_fetch_holds_nothing_back() -> None:
    worker = InProcessWorker(SETTINGS)
    worker.validate({A: offers(A, range(10)), B: offers(B, range(10))}, {A: False, B: False}, 100.0)
    worker.validate({B: offers(B, range(10, 20))}, {A: False, B: False}, 100.1)
    # Without an answer from A, B's new records wait for A's.
    assert worker.pipeline.waiting_inputs == 10
    # A fetch of A answered with nothing: B's records leave (A's next ones are live).
    worker.validate({}, {A: False, B: False}, 100.2, quiet=frozenset({A}))
    assert worker.pipeline.waiting_inputs == 0
    assert offers_counted(worker) == 30
