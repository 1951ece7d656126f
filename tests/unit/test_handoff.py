"""Fewer hops (stream_app/stages/handoff.py): the items of an input partition for its own
events-by-customer partition are handed to the attributing stage in process, count
exactly as through the topic, and count once when the input is read again after a
restart from the state persisted with them."""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict

from aiokafka.partitioner import murmur2

from bench.throughput import scenario
from stream_app.domain.totals import (
    CONVERSIONS_TOTAL,
    DUPLICATES_TOTAL,
    OFFERS_TOTAL,
    REJECTED_TOTAL,
    REVENUE_TOTAL,
)
from stream_app.pipeline import Pipeline
from stream_app.runtime.state_store import PartitionStore
from stream_app.settings import Settings
from stream_app.stages.handoff import Handoff
from stream_app.stages.messages import Output
from stream_app.tools.simulator.scenario import GroundTruth, Simulation
from tests.unit.test_pipeline_drops import FakeRecord, FakeTable

PARTITIONS = 3
SETTINGS = Settings(partitions=PARTITIONS, grace_ms=3_600_000)
EVENTS = SETTINGS.topic_events
Inputs = dict[tuple[str, int], list[FakeRecord]]


def partition_of(key: bytes) -> int:
    return int((murmur2(key) & 0x7FFFFFFF) % PARTITIONS)


def input_partition(key: bytes) -> int:
    """Where a producer put a customer's messages: mostly where the default partitioner
    does, and a fifth of the customers one partition further (a producer of its own)."""
    partition = partition_of(key)
    return (partition + 1) % PARTITIONS if zlib.crc32(key) % 5 == 0 else partition


def simulated(events: int) -> tuple[Inputs, GroundTruth]:
    """The simulator's messages on input partitions by customer (input_partition)."""
    simulation = Simulation(scenario(events, 11, SETTINGS.topic_offers, SETTINGS.topic_purchases))
    inputs: Inputs = defaultdict(list)
    for message in simulation:
        topic = (
            SETTINGS.topic_offers if message.topic_kind == "offers" else SETTINGS.topic_purchases
        )
        records = inputs[(topic, input_partition(message.key or b""))]
        records.append(FakeRecord(len(records), message.key, message.value))
    return inputs, simulation.truth


class Worker:
    """One worker owning every partition; the events-by-customer topic as lists."""

    def __init__(self, table: FakeTable, handing: bool) -> None:
        self.pipeline = Pipeline(
            SETTINGS, PartitionStore(table), PartitionStore(FakeTable(), keep_copy=False)
        )
        self.handing = handing
        self.log: dict[int, list[FakeRecord]] = defaultdict(list)
        self.read: dict[int, int] = defaultdict(int)
        self.produced_items = 0

    def validate(self, batches: Inputs) -> None:
        if self.handing:
            for source in batches:
                assert self.pipeline.handoff.admit(source, PARTITIONS, True, 0, 0)
        outputs = self.pipeline.validate({source: list(rs) for source, rs in batches.items()})
        for partition in self.pipeline.handed_partitions:
            self.pipeline.attributing.persist(partition)
        self.pipeline.handed_partitions.clear()
        self._route(outputs)
        self.drain()

    def _route(self, outputs: list[Output]) -> None:
        for output in outputs:
            if output.topic != EVENTS:
                continue
            if output.key is not None:
                self.produced_items += 1
            partition = output.partition
            if partition is None:
                assert output.key is not None
                partition = partition_of(output.key)
            log = self.log[partition]
            log.append(FakeRecord(len(log), output.key, output.value))

    def drain(self) -> None:
        for partition, log in self.log.items():
            records = log[self.read[partition] :]
            if records:
                self.read[partition] = len(log)
                self.pipeline.attribute(partition, records)
                self.pipeline.attributing.persist(partition)

    def totals(self) -> dict[str, Counter[tuple[str, ...]]]:
        summed: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
        for state in self.pipeline.partitions.values():
            for name, counter in state.totals.counters.items():
                summed[name].update(counter)
        return summed


def run(inputs: Inputs, worker: Worker, batch: int, start: int = 0) -> None:
    longest = max(len(records) for records in inputs.values())
    for first in range(start, longest, batch):
        worker.validate(
            {
                source: records[first : first + batch]
                for source, records in inputs.items()
                if records[first : first + batch]
            }
        )


def assert_truth(totals: dict[str, Counter[tuple[str, ...]]], truth: GroundTruth) -> None:
    def by_pair(name: str) -> Counter[str]:
        return Counter({"|".join(key): n for key, n in totals[name].items() if n})

    assert by_pair(OFFERS_TOTAL) == +truth.offers_presented
    assert by_pair(CONVERSIONS_TOTAL) == +truth.conversions
    revenue = Counter({key: n // 10_000 for key, n in by_pair(REVENUE_TOTAL).items()})
    assert revenue == +truth.revenue_cents
    assert by_pair(DUPLICATES_TOTAL) == +truth.duplicates
    rejected = Counter(
        {f"{topic}|{reason}": n for topic, c in truth.rejected.items() for reason, n in c.items()}
    )
    assert by_pair(REJECTED_TOTAL) == +rejected


def test_handed_items_count_as_the_topic_would() -> None:
    inputs, truth = simulated(6_000)
    through_topic = Worker(FakeTable(), handing=False)
    handed = Worker(FakeTable(), handing=True)
    run(inputs, through_topic, 500)
    run(inputs, handed, 500)
    assert_truth(through_topic.totals(), truth)
    assert_truth(handed.totals(), truth)
    assert handed.totals() == through_topic.totals()
    # The customers put on another partition took the topic; only they did.
    moved = sum(
        1
        for records in inputs.values()
        for record in records
        if record.key and input_partition(record.key) != partition_of(record.key)
    )
    valid_moved = handed.produced_items
    assert 0 < valid_moved <= moved < 0.3 * sum(len(records) for records in inputs.values())
    assert through_topic.produced_items > 5_000


def test_input_read_again_after_a_restart_counts_once() -> None:
    inputs, truth = simulated(6_000)
    table = FakeTable()
    before = Worker(table, handing=True)
    run(inputs, before, 400)
    # A restart on the state written so far; the input offsets committed lag behind it:
    # the last 1,000 records of every input partition are read again.
    longest = max(len(records) for records in inputs.values())
    after = Worker(table, handing=True)
    for partition in range(PARTITIONS):
        after.pipeline.load(EVENTS, partition)
    run(inputs, after, 300, start=longest - 1_000)
    assert_truth(after.totals(), truth)
    assert after.totals() == before.totals()


def test_a_source_hands_over_once_its_partition_is_read_to_the_end_it_had() -> None:
    handoff = Handoff(PARTITIONS)
    source = ("offers", 1)
    assert not handoff.admit(source, None, True, 5, 5)  # partition count not known yet
    assert not handoff.admit(source, PARTITIONS, False, 5, 5)  # state not loaded
    assert not handoff.admit(source, PARTITIONS, True, 3, 7)  # read to 3 of 7
    # The end offset is the one first known: records written since are not waited for.
    assert not handoff.admit(source, PARTITIONS, True, None, 9)
    assert handoff.admit(source, PARTITIONS, True, 7, 9)
    assert handoff.handing(source)
    assert handoff.admit(source, PARTITIONS, False, None, None)
    handoff.forget({source})
    assert not handoff.handing(source)
    assert not handoff.admit(source, PARTITIONS, True, 9, 12)


def test_a_topic_not_co_partitioned_never_hands_over() -> None:
    handoff = Handoff(PARTITIONS)
    source = ("offers", 1)
    assert handoff.admit(source, PARTITIONS + 1, False, None, None)
    assert not handoff.handing(source)
    assert handoff.destination(source, 1) is None


def test_only_items_for_the_source_s_own_partition_are_handed() -> None:
    handoff = Handoff(PARTITIONS)
    source = ("purchases", 2)
    assert handoff.admit(source, PARTITIONS, True, 0, 0)
    assert handoff.destination(source, 2) == 2
    assert handoff.destination(source, 0) is None
    assert handoff.destination(("purchases", 1), 1) is None
    assert handoff.destinations() == {2}
