"""After a rebalance, the pipeline's partitions are resumed only once Faust's recovery has
sought them to their committed offsets (BatchConsumer.resume_partitions, perform_seek):
a fetch answered between Faust's resume and its seek began past the committed offset."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from stream_app.runtime.hot_path import HELD_WAIT_S, RECORDS_WAIT_S, BatchConsumer, PipelineApp

OFFERS_0 = TP("upsell.offers", 0)
OFFERS_1 = TP("upsell.offers", 1)
EVENTS_0 = TP("upsell-stream-events-by-customer", 0)
CHANGELOG_0 = TP("upsell-stream-partition-state-changelog", 0)
ASSIGNED = {OFFERS_0, OFFERS_1, EVENTS_0, CHANGELOG_0}


def _consumer(committed: dict[TP, int | None]) -> Any:
    app: Any = object.__new__(PipelineApp)
    app.pipeline = SimpleNamespace(
        is_input=lambda topic: topic == OFFERS_0.topic,
        handles=lambda topic: topic in (OFFERS_0.topic, EVENTS_0.topic),
    )
    app.consumer_generation_id = 7
    consumer: Any = object.__new__(BatchConsumer)
    consumer.app = app
    consumer._active_partitions = set()
    consumer._paused_partitions = set(ASSIGNED)  # Faust pauses every partition assigned
    consumer._read_offset = defaultdict(lambda: None)
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._resume_after_seek = set()
    consumer._resume_generation = None
    consumer._sought_generation = None
    consumer._seek_epoch = 0
    consumer._seeking = False
    consumer._reread = set()
    consumer.assignment = lambda: set(ASSIGNED)
    consumer.seeks = []

    async def seek_to_committed() -> dict[TP, int | None]:
        # aiokafka seeks only to a committed offset above 0.
        consumer.seeks.append({tp: o for tp, o in committed.items() if o})
        for fetch in consumer.answered_during_the_seek:
            # A fetch asked for earlier answers now, from after the seek, and is dropped.
            left = await consumer._unsought(fetch, 7)
            assert left == {}
        return dict(committed)

    async def seek_wait(offsets: dict[TP, int]) -> None:
        consumer.seeks.append(dict(offsets))

    consumer.answered_during_the_seek = []
    consumer.seek_to_committed = seek_to_committed
    consumer.seek_wait = seek_wait
    return consumer


def test_the_pipeline_s_partitions_are_resumed_after_the_seek_to_committed_offsets() -> None:
    consumer = _consumer({OFFERS_0: 120, OFFERS_1: None, EVENTS_0: 0})
    consumer.resume_partitions({OFFERS_0, OFFERS_1, EVENTS_0, CHANGELOG_0})
    # Faust's recovery resumes, then seeks: until the seek, only the changelog is fetched.
    assert consumer._active_partitions == {CHANGELOG_0}
    asyncio.run(consumer.perform_seek())
    assert consumer._active_partitions == ASSIGNED
    assert consumer._paused_partitions == set()
    # Committed offsets first; those without one above 0 from their start.
    assert consumer.seeks == [{OFFERS_0: 120}, {OFFERS_1: 0, EVENTS_0: 0}]
    assert (consumer._sought_generation, consumer._seek_epoch) == (7, 1)


def test_a_seek_that_a_newer_rebalance_overtook_resumes_nothing() -> None:
    consumer = _consumer({OFFERS_0: 5, OFFERS_1: 5, EVENTS_0: 5})
    consumer.resume_partitions({OFFERS_0, OFFERS_1, EVENTS_0})
    consumer.app.consumer_generation_id = 8  # the next rebalance assigns and pauses anew
    asyncio.run(consumer.perform_seek())
    assert consumer._active_partitions == set()
    assert consumer._resume_after_seek == set()


def test_partitions_of_a_fetch_dropped_during_the_seek_are_sought_again_at_its_end() -> None:
    consumer = _consumer({OFFERS_0: 120, OFFERS_1: 40, EVENTS_0: 9})
    consumer.answered_during_the_seek = [
        {OFFERS_0: [SimpleNamespace(offset=120)], EVENTS_0: [SimpleNamespace(offset=9)]}
    ]
    consumer.resume_partitions({OFFERS_0, OFFERS_1, EVENTS_0})
    asyncio.run(consumer.perform_seek())
    # Had they stayed where the dropped fetch left them, records 120 and 9 were lost.
    assert consumer.seeks[0] == {OFFERS_0: 120, OFFERS_1: 40, EVENTS_0: 9}
    assert sorted(consumer.seeks[1:], key=str) == sorted([{OFFERS_0: 120}, {EVENTS_0: 9}], key=str)
    assert consumer._reread == set() and not consumer._seeking


def _waits(consumer: Any) -> list[float]:
    """Record the timeout of each of Faust's waits for records (answering with none)."""
    waits: list[float] = []

    async def getmany(active_partitions: set[Any], timeout: float) -> Any:
        waits.append(timeout)
        return {}

    consumer._getmany = getmany
    consumer.flow_active = True
    return waits


def test_while_the_pipeline_s_partitions_wait_for_the_seek_a_pass_waits_briefly() -> None:
    """A fetch asks only for the partitions active as it begins: one begun before the seek
    ended kept the pipeline's records waiting a whole RECORDS_WAIT_S."""
    consumer = _consumer({OFFERS_0: 5, OFFERS_1: 5, EVENTS_0: 5})
    waits = _waits(consumer)
    consumer.resume_partitions(ASSIGNED)  # the changelog is active, the rest held
    asyncio.run(consumer._next_records())
    assert waits == [HELD_WAIT_S]
    asyncio.run(consumer.perform_seek())
    asyncio.run(consumer._next_records())
    assert waits == [HELD_WAIT_S, RECORDS_WAIT_S]


async def _timed_next_records(consumer: Any) -> tuple[Any, float]:
    """What a pass's wait for records returned, and how long it took."""
    started = asyncio.get_running_loop().time()
    records = await consumer._next_records()
    return records, asyncio.get_running_loop().time() - started


def test_with_no_partition_active_a_pass_does_not_sleep_a_second() -> None:
    """Faust's wait for records sleeps a whole second when no partition is active, as
    after an assignment, before the recovery resumes any."""
    consumer = _consumer({OFFERS_0: 5, OFFERS_1: 5, EVENTS_0: 5})
    waits = _waits(consumer)

    records, took = asyncio.run(_timed_next_records(consumer))
    assert (records, waits) == (None, [])
    assert HELD_WAIT_S <= took < RECORDS_WAIT_S / 2


def test_a_pass_begun_while_the_flow_was_stopped_does_not_sleep_a_second() -> None:
    """A wait for records begun during a rebalance waits for the flow to resume; the
    pipeline's partitions are still held for the seek then, and Faust's own wait found no
    partition active and slept a whole second (a worker's first records a second late in
    the bench's two-worker runs)."""
    consumer = _consumer({OFFERS_0: 5, OFFERS_1: 5, EVENTS_0: 5})
    waits = _waits(consumer)
    consumer.flow_active = False
    consumer.can_resume_flow = asyncio.Event()

    async def resumed(event: asyncio.Event) -> None:
        await asyncio.sleep(0.01)
        consumer.flow_active = True  # the changelog not resumed yet, the rest held

    consumer.wait = resumed

    records, took = asyncio.run(_timed_next_records(consumer))
    assert (records, waits) == (None, [])
    assert HELD_WAIT_S <= took < RECORDS_WAIT_S / 2
    consumer.resume_partitions(ASSIGNED)  # the changelog is active, the rest held
    asyncio.run(consumer._next_records())
    assert waits == [HELD_WAIT_S]
