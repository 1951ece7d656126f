"""BatchSender routes every record where aiokafka's own send would, a batch per partition,
also once the partition of a key is remembered or the topic's partitions change; the
changelogs' records go in compressed batches that read back as written."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from stream_app.runtime.hot_path import BatchSender, Record


class FakeBatch:
    def __init__(self, room: int) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.room = room

    def append(
        self, *, key: bytes | None, value: bytes | None, timestamp: None, headers: list[Any]
    ) -> object | None:
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeClient:
    def __init__(self) -> None:
        self.topics: set[str] = set()

    async def add_topic(self, topic: str) -> None:
        self.topics.add(topic)

    async def _wait_on_metadata(self, topic: str) -> None:
        pass


class FakeMetadata:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))


class FakeProducer:
    def __init__(self, partitions: int, room: int = 1000) -> None:
        self.client = FakeClient()
        self._metadata = FakeMetadata(partitions)
        self._partitioner = DefaultPartitioner()
        self.room = room
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []
        # aiokafka's own batches, as handed over.
        self.built: list[tuple[str, int, BatchBuilder]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.room)

    async def send_batch(
        self, batch: FakeBatch | BatchBuilder, topic: str, *, partition: int
    ) -> Any:
        if isinstance(batch, BatchBuilder):
            self.built.append((topic, partition, batch))
        else:
            self.sent.append((topic, partition, batch.records))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def routed(producer: FakeProducer) -> dict[tuple[str, bytes | None, bytes | None], int]:
    return {
        (topic, key, value): partition
        for topic, partition, records in producer.sent
        for key, value in records
    }


def expected(key: bytes, partitions: int) -> int:
    return int(DefaultPartitioner()(key, list(range(partitions)), list(range(partitions))))


def test_keys_go_where_aiokafka_sends_them_whatever_is_remembered() -> None:
    producer = FakeProducer(partitions=6, room=7)
    sender = BatchSender(producer)
    sender.KEY_PARTITIONS_HELD = 10  # cleared several times below
    keys = [f"customer-{n % 25}".encode() for n in range(200)]
    records: list[Record] = [("events", None, key, b"%d" % n, None) for n, key in enumerate(keys)]
    records.append(("partials", 0, None, b"pinned", None))

    async def run() -> None:
        await sender.send(records[:90])
        await sender.send(records[90:])
        await sender.flush()
        producer._metadata.partitions = 9  # partitions added: choices made again
        await sender.send([("events", None, key, b"later", None) for key in keys[:25]])

    asyncio.run(run())
    where = routed(producer)
    assert len(where) == len(records) + 25
    for n, key in enumerate(keys):
        assert where[("events", key, b"%d" % n)] == expected(key, 6)
    for key in keys[:25]:
        assert where[("events", key, b"later")] == expected(key, 9)
    assert where[("partials", None, b"pinned")] == 0
    assert producer.client.topics == {"events", "partials"}
    # Full batches were sent as they filled, in order within each partition.
    assert all(0 < len(batch) <= 7 for _, _, batch in producer.sent)
    numbers = [
        int(value)
        for topic, partition, batch in producer.sent
        if topic == "events" and partition == expected(keys[0], 6)
        for _, value in batch
        if value is not None and value != b"later"
    ]
    assert numbers == sorted(numbers)


def test_changelog_records_go_in_zstd_batches_that_read_back_as_written() -> None:
    producer = FakeProducer(partitions=2)
    sender = BatchSender(producer)
    chunk = bytes(range(256)) * 256  # 64 KiB, as repetitive as a state's entries
    records: list[Record] = [
        ("changelog", n % 2, b"0|#j|%d|0" % n, None if n % 5 == 4 else chunk + b"%d" % n, None)
        for n in range(200)  # 10 MB: more than one batch per partition
    ]
    asyncio.run(sender.send(records, compressed=True))
    read: dict[int, list[tuple[bytes | None, bytes | None]]] = {0: [], 1: []}
    for topic, partition, builder in producer.built:
        assert topic == "changelog"
        # What the broker receives: the batch as aiokafka builds it.
        built = bytes(builder._build())
        batch = DefaultRecordBatch(built)
        assert batch.compression_type == DefaultRecordBatch.CODEC_ZSTD
        batch_read = [(record.key, record.value) for record in batch]  # read once: an iterator
        assert len(built) < sum(len(value or b"") for _, value in batch_read) / 10
        read[partition].extend(batch_read)
    assert len(producer.built) > 2
    for partition in (0, 1):
        assert read[partition] == [(k, v) for _, p, k, v, _ in records if p == partition]
    assert producer.sent == []


class AcknowledgingProducer(FakeProducer):
    """Hands out a delivery future per batch that the test resolves, as the broker would
    acknowledge them; records what reached the producer, in order."""

    def __init__(self) -> None:
        super().__init__(partitions=2)
        self.handed: list[tuple[str, list[bytes | None]]] = []
        self.deliveries: list[asyncio.Future[None]] = []

    async def send_batch(
        self, batch: FakeBatch | BatchBuilder, topic: str, *, partition: int
    ) -> Any:
        values = (
            [record.value for record in DefaultRecordBatch(bytes(batch._build()))]
            if isinstance(batch, BatchBuilder)
            else [value for _, value in batch.records]
        )
        self.handed.append((topic, values))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deliveries.append(future)
        return future

    def acknowledge(self, error: Exception | None = None, first: int | None = None) -> None:
        """Answer the deliveries not answered yet, or only the `first` of them."""
        waiting = [future for future in self.deliveries if not future.done()]
        for future in waiting[:first]:
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


# A sender that waits for good fails the test instead of hanging it.
TIMEOUT_S = 10


def state(value: bytes) -> list[Record]:
    return [("changelog", 0, b"key", value, None)]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_state_waits_for_the_outputs_and_the_state_before_it() -> None:
    producer = AcknowledgingProducer()
    sender = BatchSender(producer)
    outputs_1, outputs_2 = ("partials", [b"outputs 1"]), ("partials", [b"outputs 2"])

    async def run() -> list[list[tuple[str, list[bytes | None]]]]:
        seen = []
        await sender.send([("partials", 0, None, b"outputs 1", None)])
        sender.send_after_acknowledged(state(b"state 1"))
        await sender.send([("partials", 0, None, b"outputs 2", None)])
        sender.send_after_acknowledged(state(b"state 2"))
        for first in (0, 1, 1, 1):
            producer.acknowledge(first=first)
            await settle()
            seen.append(list(producer.handed))
        flushed = asyncio.ensure_future(sender.flush())
        await settle()
        assert not flushed.done()  # state 2 is not acknowledged yet
        producer.acknowledge()
        await flushed
        return seen

    seen = asyncio.run(asyncio.wait_for(run(), TIMEOUT_S))
    assert seen == [
        [outputs_1, outputs_2],  # nothing acknowledged: no state sent
        [outputs_1, outputs_2, ("changelog", [b"state 1"])],  # outputs 1 acknowledged
        [outputs_1, outputs_2, ("changelog", [b"state 1"])],  # outputs 2: state 1 is not
        [outputs_1, outputs_2, ("changelog", [b"state 1"]), ("changelog", [b"state 2"])],
    ]


def test_states_ready_together_go_together_in_order() -> None:
    producer = AcknowledgingProducer()
    sender = BatchSender(producer)

    async def run() -> None:
        for n in range(3):
            await sender.send([("partials", 0, None, b"outputs %d" % n, None)])
            sender.send_after_acknowledged(state(b"state %d" % n))
        producer.acknowledge()
        await settle()
        producer.acknowledge()
        await sender.flush()

    asyncio.run(asyncio.wait_for(run(), TIMEOUT_S))
    assert producer.handed[3:] == [("changelog", [b"state 0", b"state 1", b"state 2"])]


def test_no_state_is_sent_after_a_record_before_it_failed() -> None:
    producer = AcknowledgingProducer()
    sender = BatchSender(producer)

    async def run() -> str:
        await sender.send([("partials", 0, None, b"outputs", None)])
        sender.send_after_acknowledged(state(b"state 1"))
        sender.send_after_acknowledged(state(b"state 2"))
        producer.acknowledge(RuntimeError("broker down"))
        await settle()
        try:
            sender.send_after_acknowledged(state(b"state 3"))
        except RuntimeError as error:
            refused = str(error)
        else:
            refused = "accepted"
        try:
            await sender.flush()
        except RuntimeError as error:
            return f"{refused}; flush: {error}"
        return f"{refused}; flush passed"

    assert asyncio.run(asyncio.wait_for(run(), TIMEOUT_S)) == "broker down; flush: broker down"
    assert producer.handed == [("partials", [b"outputs"])]


def test_a_cancelled_flush_leaves_the_held_state_to_be_sent() -> None:
    producer = AcknowledgingProducer()
    sender = BatchSender(producer)

    async def run() -> None:
        await sender.send([("partials", 0, None, b"outputs", None)])
        sender.send_after_acknowledged(state(b"state"))
        flushed = asyncio.ensure_future(sender.flush())
        await settle()
        flushed.cancel()
        await settle()
        producer.acknowledge()
        await settle()
        producer.acknowledge()
        await sender.flush()

    asyncio.run(asyncio.wait_for(run(), TIMEOUT_S))
    assert producer.handed == [("partials", [b"outputs"]), ("changelog", [b"state"])]
