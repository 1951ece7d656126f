"""Every private attribute of faust-streaming, mode and aiokafka that the worker uses.

The batch hot path, the batch changelog recovery and the producer's batch sender reach
under the libraries' public interfaces; each such reach is one small function here, and
the methods the worker overrides are listed in OVERRIDDEN. tests/unit/test_faust_internals.py
checks every name below on the installed libraries' real classes and instances, so an
upgrade that renames or removes one fails that test by name instead of the worker at run
time.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

# Private methods the worker's subclasses override (and call through super()).
OVERRIDDEN: tuple[tuple[type, str], ...] = (
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer"),
    (faust_aiokafka.Consumer, "_new_consumer_thread"),
    (faust_aiokafka.Consumer, "_commit"),
    (faust_aiokafka.Consumer, "_drain_messages"),
    (faust_aiokafka.Consumer, "resume_partitions"),
    (faust_aiokafka.Consumer, "perform_seek"),
    (faust_aiokafka.Producer, "_settings_extra"),
    (faust.Worker, "_schedule_shutdown"),
)


# -- aiokafka's consumer ---------------------------------------------------------------
def set_fetch_max_wait_ms(consumer: Any, wait_ms: int) -> None:
    """How long a fetch waits for records at most; AIOKafkaConsumer.start() reads it when
    it creates the fetcher, and its constructor takes no larger value from Faust."""
    consumer._fetch_max_wait_ms = wait_ms


def subscription(consumer: Any) -> Any:
    """aiokafka's subscription (assignment and per-partition state) under a Faust consumer;
    None before the first assignment."""
    return consumer._thread._ensure_consumer()._subscription.subscription


def topic_partitions(consumer: Any, topic: str) -> set[int] | None:
    """The partitions of a topic as the aiokafka consumer under a Faust consumer knows
    them from its metadata; None while it knows none."""
    partitions: set[int] | None = consumer._thread._ensure_consumer().partitions_for_topic(topic)
    return partitions


def leave_group_when_stopped(consumer_thread: Any) -> None:
    """Have the aiokafka consumer under Faust's consumer thread leave its group when it
    stops. aiokafka's stop leaves only as a dynamic member: a static one (with
    group.instance.id) keeps its place, and its partitions wait, until its session times
    out. Called as it stops cleanly: the place is kept only for a crashed worker's
    successor."""
    consumer = consumer_thread._consumer
    coordinator = None if consumer is None else consumer._coordinator
    if coordinator is not None:
        coordinator._group_instance_id = None


# -- Faust's consumer ------------------------------------------------------------------
def read_offsets(consumer: Any) -> dict[Any, int | None]:
    """Faust's offset of the last record handled per partition (what it commits and what
    its liveness check reads); the hot path updates it for the records it handles."""
    offsets: dict[Any, int | None] = consumer._read_offset
    return offsets


def committed_offsets(consumer: Any) -> dict[Any, int | None]:
    """The committed offsets Faust's last seek to them found (perform_seek), by partition:
    absent or None for a partition with none above 0 (aiokafka's seek_to_committed
    leaves those where they stand)."""
    offsets: dict[Any, int | None] = consumer._committed_offset
    return offsets


def is_stopped(service: Any) -> bool:
    """Whether a mode service (Faust's consumer, its fetcher) was asked to stop."""
    return bool(service._stopped.is_set())


def active_partitions(consumer: Any) -> set[Any]:
    """The partitions a fetch asks for now: those assigned and not paused."""
    active: set[Any] = consumer._get_active_partitions()
    return active


async def fetch(consumer: Any, partitions: set[Any], timeout: float) -> Any:
    """One fetch of these partitions through Faust's consumer thread: records by
    partition, empty if none came within `timeout` seconds or the flow stopped."""
    return await consumer._getmany(active_partitions=partitions, timeout=timeout)


def seek_at_once(consumer: Any, tp: Any, offset: int) -> None:
    """Seek an assigned partition without giving way to the event loop: Faust's own seeks
    are coroutines, its consumer thread's `seek` calls aiokafka's, which is synchronous."""
    consumer._thread.seek(tp, offset)


def to_message(consumer: Any, tp: Any, record: Any) -> Any:
    """Faust's Message for a fetched record, for Faust's own per-message path."""
    return consumer._to_message(tp, record)


async def commit_offsets(consumer: Any, offsets: Any) -> None:
    """Commit the offsets as given, without Faust's acked-offset bookkeeping."""
    await consumer._commit_offsets(offsets)


# -- producers -------------------------------------------------------------------------
def aiokafka_producer(producer: Any) -> Any:
    """The AIOKafkaProducer under a Faust producer (created on first use)."""
    return producer._ensure_producer()


async def wait_on_metadata(producer: Any, topic: str) -> None:
    """Wait until aiokafka's producer knows the topic's partitions (as its send does)."""
    await producer.client._wait_on_metadata(topic)


def producer_metadata(producer: Any) -> Any:
    """aiokafka's producer's cluster metadata (partitions of each topic)."""
    return producer._metadata


def producer_partitioner(producer: Any) -> Any:
    """aiokafka's producer's choice of partition for a key: (key, all, available) -> int."""
    return producer._partitioner


# -- tables and their recovery ---------------------------------------------------------
def changelog_event_hook(table: Any) -> Any:
    """The table's on_changelog_event callback (None unless the application set one)."""
    return table._on_changelog_event


def key_decoder(table: Any) -> Any:
    """How the table turns a decoded changelog key into its store key."""
    return table._to_key


def key_partitions(store: Any) -> dict[Any, int]:
    """The memory store's partition of each key (what Faust drops on revocation)."""
    partitions: dict[Any, int] = store._key_partition
    return partitions


def recovery_began_at(recovery: Any) -> float | None:
    """When (time.monotonic) Faust's last recovery began; None before the first."""
    began_at: float | None = recovery._recovery_started_at
    return began_at


def mark_recovery_active(recovery: Any, tp: Any, now: float) -> None:
    """Tell Faust's recovery that a changelog partition just delivered and was flushed,
    as its own per-record path does (its stall warnings read these)."""
    recovery._active_events_received_at[tp] = now
    recovery._last_flush_at = now


# -- mode's worker ---------------------------------------------------------------------
def stop_signalled(worker: Any) -> bool:
    """Whether the worker already received a stop signal."""
    return bool(worker._signal_stop_time)
