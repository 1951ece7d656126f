"""The hot path's loop (BatchConsumer._drain) over scripted fetches: what a fetch answered
after a rebalance began brings is dropped, a pass that leaves the worker caught up
commits at once while one that leaves records behind waits for COMMIT_INTERVAL_S, and a
fetch of an internal partition that begins past its state's next offset is read again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from stream_app.domain.gaps import GapGuard
from stream_app.runtime.hot_path import BatchConsumer, PipelineApp
from tests.unit.test_hot_path_liveness import Partition

OFFERS_0 = TP("upsell.offers", 0)
OFFERS_1 = TP("upsell.offers", 1)
EVENTS_0 = TP("upsell-stream-events-by-customer", 0)
CHANGELOG_3 = TP("upsell-stream-partition-state-changelog", 3)


class FakePipeline:
    """Records what the hot path validates; every input's offsets are its positions."""

    def __init__(self) -> None:
        self.validated: list[dict[tuple[str, int], list[int]]] = []
        self.waiting_inputs = False
        self.handed_partitions: list[int] = []
        self.handoff = SimpleNamespace(admit=lambda *facts: True)
        self.settings = SimpleNamespace(topic_events="upsell-stream-events-by-customer")
        self._positions: dict[tuple[str, int], int] = {}
        # Set by a test: validation hands these events-by-customer partitions items in
        # process, whose state `persist` queues as changelog records.
        self.hands_to: list[int] = []
        self.outbox: list[tuple[str, int, bytes, bytes]] = []
        self.stores = [SimpleNamespace(take_outbox=self._take_outbox)]

    def is_input(self, topic: str) -> bool:
        return topic == OFFERS_0.topic

    def handles(self, topic: str) -> bool:
        return False

    def has_state(self, topic: str, partition: int) -> bool:
        return False

    def validate(self, batches: dict[tuple[str, int], list[Any]], **facts: Any) -> list[Any]:
        self.validated.append({tp: [r.offset for r in batch] for tp, batch in batches.items()})
        for tp, batch in batches.items():
            self._positions[tp] = batch[-1].offset + 1
        self.handed_partitions = list(self.hands_to)
        return [SimpleNamespace(topic="out", partition=0, key=b"output", value=b"", headers=[])]

    def persist(self, topic: str, partition: int) -> None:
        self.outbox.append(("changelog", partition, b"state", b""))

    def _take_outbox(self) -> list[tuple[str, int, bytes, bytes]]:
        outbox, self.outbox = self.outbox, []
        return outbox

    def input_positions(self) -> dict[tuple[str, int], int]:
        return dict(self._positions)

    def take_rewinds(self) -> dict[tuple[str, int], int]:
        return {}


class FakeStatePipeline(FakePipeline):
    """Also an events-by-customer partition whose loaded state applies records as the
    compiled one does: those before its next offset are skipped, and it moves past the
    last one."""

    def __init__(self, next_offset: int) -> None:
        super().__init__()
        self.state_next_offset = next_offset
        self.applied: list[int] = []
        self.lag: dict[tuple[str, int], int] = {}

    def handles(self, topic: str) -> bool:
        return topic == EVENTS_0.topic

    def has_state(self, topic: str, partition: int) -> bool:
        return topic == EVENTS_0.topic

    def next_offset(self, topic: str, partition: int) -> int | None:
        return self.state_next_offset

    def now(self) -> None:
        return None

    def handle(self, topic: str, partition: int, batch: list[Any], now: Any) -> list[Any]:
        for record in batch:
            if record.offset >= self.state_next_offset:
                self.applied.append(record.offset)
                self.state_next_offset = record.offset + 1
        return []

    def touch(self) -> None:
        pass


class FakeSender:
    """Records what the hot path sends and when it waits for acknowledgements."""

    def __init__(self) -> None:
        self.log: list[tuple[str, ...]] = []

    async def send(self, records: Any, compressed: bool = False) -> None:
        for record in records:
            self.log.append(("send", record[2]))

    def send_after_acknowledged(self, records: Any) -> None:
        for record in records:
            self.log.append(("send after acknowledged", record[2]))

    async def dispatch(self) -> None:
        self.log.append(("dispatch",))

    async def flush(self) -> None:
        self.log.append(("flush",))


Fetch = dict[TP, list[int]]


def _consumer(
    pipeline: FakePipeline, partitions: dict[TP, Partition], fetches: list[Callable[[], Fetch]]
) -> tuple[Any, list[dict[TP, int]]]:
    """A consumer whose fetches answer in turn with the given records (each a callable, so
    a fetch can also start a rebalance); the loop stops after the last."""
    app: Any = object.__new__(PipelineApp)
    app.pipeline = pipeline
    app.consumer_generation_id = 1
    app.stores = pipeline.stores
    consumer: Any = object.__new__(BatchConsumer)
    consumer.app = app
    consumer.transport = SimpleNamespace(app=SimpleNamespace(should_stop=False))
    consumer._stopped = asyncio.Event()

    async def wait_for_the_flow(event: Any) -> None:
        consumer.flow_active = True  # the rebalance ends

    consumer.wait = wait_for_the_flow
    consumer.can_resume_flow = asyncio.Event()
    consumer._crashed = asyncio.Event()
    consumer.flow_active = True
    consumer._batch_lock = asyncio.Lock()
    consumer._batch_sender = FakeSender()
    consumer._polled_at_records = {}
    consumer._uncommitted = {}
    consumer._committed_at = time.monotonic()
    consumer._read_offset = {}
    consumer._tp_state = partitions.get
    consumer.assignment = lambda: set(partitions)
    consumer._handoff_admits = lambda *facts: True
    consumer._gaps = GapGuard()
    consumer._sought_generation = 1  # this generation's seek to the committed offsets is done
    consumer._seek_epoch = 0
    consumer._seeking = False
    consumer._reread = set()
    consumer._resume_after_seek = set()
    consumer._active_partitions = None  # Faust's: every partition assigned and not paused
    consumer._paused_partitions = set()
    consumer._committed_offset = {}
    consumer.seeks = []

    async def seek_wait(offsets: dict[TP, int]) -> None:
        consumer.seeks.append(dict(offsets))
        for tp, offset in offsets.items():
            partitions[tp].position = offset

    consumer.seek_wait = seek_wait

    def seek_at_once(tp: TP, offset: int) -> None:
        consumer.seeks.append({tp: offset})
        partitions[tp].position = offset

    consumer._thread = SimpleNamespace(seek=seek_at_once)
    commits: list[dict[TP, int]] = []

    async def commit_offsets(offsets: dict[TP, int]) -> None:
        commits.append(dict(offsets))

    consumer._commit_offsets = commit_offsets
    script = iter(fetches)

    async def getmany(active_partitions: set[TP], timeout: float) -> Any:
        fetch = next(script, None)
        if fetch is None:
            consumer._stopped.set()
            return {}
        records = fetch()
        for tp, offsets in records.items():
            # aiokafka's position moves past what a fetch returned.
            partitions[tp].position = offsets[-1] + 1
        return {
            tp: [SimpleNamespace(offset=offset) for offset in offsets]
            for tp, offsets in records.items()
        }

    consumer._getmany = getmany
    return consumer, commits


def _drain(consumer: Any) -> None:
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    asyncio.run(asyncio.wait_for(consumer._drain(fetcher), timeout=10))


def test_a_fetch_answered_after_a_rebalance_began_is_not_handled() -> None:
    pipeline = FakePipeline()
    partitions = {OFFERS_0: Partition(highwater=6, position=0)}
    consumer: Any = None

    def answered_during_the_rebalance() -> Fetch:
        consumer.flow_active = False  # Faust stops the flow when a rebalance begins
        return {OFFERS_0: [0, 1, 2]}

    def answered_after_it() -> Fetch:
        consumer.flow_active = True
        # The recovery sought the partition back to its committed offset (none yet).
        return {OFFERS_0: [0, 1, 2, 3, 4, 5]}

    consumer, commits = _consumer(
        pipeline, partitions, [answered_during_the_rebalance, answered_after_it]
    )
    _drain(consumer)
    assert pipeline.validated == [{(OFFERS_0.topic, 0): [0, 1, 2, 3, 4, 5]}]
    assert commits == [{OFFERS_0: 6}]


def test_records_dropped_while_the_flow_is_stopped_are_given_back() -> None:
    """A changelog is sought by the recovery before it resumes the flow: what a fetch
    asked for before the rebalance brings in between is fetched again, not lost."""
    pipeline = FakePipeline()
    partitions = {CHANGELOG_3: Partition(highwater=3, position=0)}
    consumer: Any = None

    def answered_before_the_flow_resumed() -> Fetch:
        consumer.flow_active = False
        return {CHANGELOG_3: [0, 1, 2]}

    consumer, _ = _consumer(pipeline, partitions, [answered_before_the_flow_resumed])
    _drain(consumer)
    assert consumer.seeks == [{CHANGELOG_3: 0}]
    assert partitions[CHANGELOG_3].position == 0


def test_a_partition_sought_since_the_fetch_keeps_the_seek_s_position() -> None:
    pipeline = FakePipeline()
    partitions = {
        CHANGELOG_3: Partition(highwater=10, position=8),
        OFFERS_0: Partition(highwater=10, position=10),
    }
    consumer, _ = _consumer(pipeline, partitions, [])
    fetched = {
        CHANGELOG_3: [SimpleNamespace(offset=offset) for offset in (5, 6, 7)],
        OFFERS_0: [SimpleNamespace(offset=offset) for offset in (8, 9)],
    }
    fetched_to = consumer._positions(fetched)
    partitions[CHANGELOG_3].position = 0  # the recovery sought it to where it starts
    consumer._give_back(fetched, fetched_to)
    assert consumer.seeks == [{OFFERS_0: 8}]
    assert partitions[CHANGELOG_3].position == 0


def test_records_a_rebalance_cut_off_from_faust_are_given_back() -> None:
    """A hand-over to Faust's recovery stopped by a rebalance: what it did not hand over,
    of that partition and the ones after it, is fetched again."""
    pipeline = FakePipeline()
    changelog_4 = TP(CHANGELOG_3.topic, 4)
    partitions = {
        CHANGELOG_3: Partition(highwater=5, position=5),
        changelog_4: Partition(highwater=3, position=3),
    }
    consumer, _ = _consumer(pipeline, partitions, [])
    consumer.app.tables = SimpleNamespace(recovery=SimpleNamespace(active_tps=set()))
    consumer.suspend_flow = asyncio.Event()
    consumer._to_message = lambda tp, record: (tp, record.offset)
    handed: list[tuple[TP, int]] = []

    async def callback(message: tuple[TP, int]) -> None:
        handed.append(message)
        if len(handed) == 2:
            consumer.flow_active = False  # a rebalance began

    async def wait_first(*coroutines: Any) -> None:
        await coroutines[0]
        for coroutine in coroutines[1:]:
            coroutine.close()

    consumer.callback = callback
    consumer.wait_first = wait_first
    fetched = {
        CHANGELOG_3: [SimpleNamespace(offset=offset) for offset in range(5)],
        changelog_4: [SimpleNamespace(offset=offset) for offset in range(3)],
    }
    asyncio.run(consumer._hand_to_faust(fetched, 1, consumer._positions(fetched)))
    assert handed == [(CHANGELOG_3, 0), (CHANGELOG_3, 1)]
    assert consumer.seeks == [{CHANGELOG_3: 2}, {changelog_4: 0}]


def test_a_pass_that_leaves_the_worker_caught_up_commits_at_once() -> None:
    pipeline = FakePipeline()
    partitions = {
        OFFERS_0: Partition(highwater=4, position=0),
        OFFERS_1: Partition(highwater=2, position=0),
    }
    consumer, commits = _consumer(
        pipeline, partitions, [lambda: {OFFERS_0: [0, 1, 2, 3], OFFERS_1: [0, 1]}]
    )
    # Committed just now: only being caught up can make this pass commit.
    _drain(consumer)
    assert commits == [{OFFERS_0: 4, OFFERS_1: 2}]
    assert consumer._uncommitted == {}


def test_a_pass_that_leaves_records_behind_waits_for_the_commit_interval() -> None:
    pipeline = FakePipeline()
    partitions = {
        OFFERS_0: Partition(highwater=10, position=0),
        OFFERS_1: Partition(highwater=2, position=0),
    }
    seen: list[dict[TP, int]] = []
    consumer: Any = None

    def first() -> Fetch:
        return {OFFERS_0: [0, 1, 2, 3], OFFERS_1: [0, 1]}

    def second() -> Fetch:
        # Looked at before this fetch: offset 4 of partition 0 was still behind.
        seen.append(dict(consumer._uncommitted))
        return {OFFERS_0: [4, 5, 6, 7, 8, 9]}

    consumer, commits = _consumer(pipeline, partitions, [first, second])
    _drain(consumer)
    assert seen == [{OFFERS_0: 4, OFFERS_1: 2}]
    # The second pass left the worker caught up: one commit of both passes' offsets.
    assert commits == [{OFFERS_0: 10, OFFERS_1: 2}]


def test_the_state_goes_out_only_after_the_outputs_it_reflects_are_acknowledged() -> None:
    """BatchSender.send_after_acknowledged holds the state until everything sent before
    it is acknowledged (tests/unit/test_batch_sender.py): the outputs are sent first."""
    pipeline = FakePipeline()
    pipeline.hands_to = [3]
    partitions = {OFFERS_0: Partition(highwater=2, position=0)}
    consumer, commits = _consumer(pipeline, partitions, [lambda: {OFFERS_0: [0, 1]}])
    _drain(consumer)
    log = consumer._batch_sender.log
    held = ("send after acknowledged", b"state")
    assert log.count(("send", b"output")) == 1 and log.count(held) == 1
    assert log.index(("send", b"output")) < log.index(held)
    assert ("send", b"state") not in log
    assert commits == [{OFFERS_0: 2}]
    assert log[-1] == ("flush",)  # the commit comes after the state is acknowledged too


def test_a_fetch_past_the_state_s_next_offset_is_read_again_from_it() -> None:
    """As in the scale-out test's lost purchases: a partition resumed before Faust sought
    it to its committed offset answered from further on."""
    pipeline = FakeStatePipeline(next_offset=4)
    partitions = {EVENTS_0: Partition(highwater=11, position=8)}
    consumer, commits = _consumer(
        pipeline,
        partitions,
        [lambda: {EVENTS_0: [8, 9, 10]}, lambda: {EVENTS_0: list(range(4, 11))}],
    )
    _drain(consumer)
    assert consumer.seeks == [{EVENTS_0: 4}]
    assert pipeline.applied == list(range(4, 11))
    assert commits == [{EVENTS_0: 11}]


def test_records_gone_from_kafka_do_not_hold_the_partition_back() -> None:
    pipeline = FakeStatePipeline(next_offset=0)
    partitions = {EVENTS_0: Partition(highwater=503, position=500)}
    # Retention deleted offsets 0 to 499: reading again from 0 answers from 500 again.
    consumer, commits = _consumer(
        pipeline, partitions, [lambda: {EVENTS_0: [500, 501]}, lambda: {EVENTS_0: [500, 501, 502]}]
    )
    _drain(consumer)
    assert consumer.seeks == [{EVENTS_0: 0}]
    assert pipeline.applied == [500, 501, 502]
    assert commits == [{EVENTS_0: 503}]


def test_a_fetch_asked_for_before_the_seek_to_committed_offsets_is_read_again() -> None:
    """A fetch asked for before a rebalance answered after the recovery's seek, from a
    position past records a fetch dropped during the rebalance."""
    pipeline = FakeStatePipeline(next_offset=4)
    partitions = {
        EVENTS_0: Partition(highwater=11, position=8),
        OFFERS_0: Partition(highwater=30, position=20),
    }
    consumer: Any = None

    def answered_after_the_seek() -> Fetch:
        consumer._seek_epoch += 1  # the recovery's seek was done while this fetch waited
        consumer._committed_offset.update({EVENTS_0: 2, OFFERS_0: 12})
        return {EVENTS_0: [8, 9, 10], OFFERS_0: [20, 21]}

    def read_again() -> Fetch:
        return {EVENTS_0: list(range(2, 11)), OFFERS_0: list(range(12, 30))}

    consumer, _ = _consumer(pipeline, partitions, [answered_after_the_seek, read_again])
    _drain(consumer)
    assert consumer.seeks == [{EVENTS_0: 2}, {OFFERS_0: 12}]
    assert pipeline.applied == list(range(4, 11))
    assert pipeline.validated == [{(OFFERS_0.topic, 0): list(range(12, 30))}]


def test_a_fetch_before_this_generation_s_seek_waits_for_it() -> None:
    pipeline = FakeStatePipeline(next_offset=4)
    partitions = {EVENTS_0: Partition(highwater=11, position=8)}
    consumer: Any = None

    def answered_during_the_recovery() -> Fetch:
        consumer.app.consumer_generation_id = 2  # assigned anew, not sought yet
        return {EVENTS_0: [8, 9, 10]}

    consumer, _ = _consumer(pipeline, partitions, [answered_during_the_recovery])
    _drain(consumer)
    # Not handled, and left for the seek still to come.
    assert pipeline.applied == [] and consumer.seeks == []
