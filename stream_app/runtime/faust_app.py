"""The Faust application: broker, tables, topics, web pages, and the batch hot path."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from stream_app.pipeline import Pipeline
from stream_app.runtime import faust_internals
from stream_app.runtime.hot_path import BatchConsumer, BatchTransport, PipelineApp
from stream_app.runtime.kafka_clients import faust_credentials
from stream_app.runtime.state_store import PartitionStore
from stream_app.runtime.topics import (
    BOARD_TABLE,
    CHANGELOG_CONFIG,
    LARGE_MESSAGE_BYTES,
    PARTITION_TABLE,
    durability_config,
    replication_factor,
)
from stream_app.settings import Settings

log = logging.getLogger(__name__)

PRODUCER_BATCH_BYTES = 512 * 1024
# How long a partition may hold records with none of them handled before the worker logs
# it as stalled (BatchConsumer.verify_event_path). A batch takes well under a second;
# Faust's default, 5 minutes, leaves a stuck worker unreported for long.
STALL_TIMEOUT_S = 60.0


class StateTable(faust.Table):  # type: ignore[type-arg]
    """A changelog-backed table whose partitions' state lives in the pipeline once loaded.

    Faust's in-memory store persists nothing, so Faust resumes a changelog partition's
    recovery from where the last one in this process ended, while it still holds that
    offset. It forgets the offset when the partition is revoked, but not in a generation
    whose recovery it skips because another rebalance began meanwhile ("rebalance again
    generation id" in faust/tables/recovery.py): a partition that moved away then and came
    back would resume mid-changelog, into a table whose earlier entries are gone
    (PartitionStore.release). So a partition whose state is not live here is always read
    from the changelog's start; a live one keeps Faust's offset, since what recovery
    replays for it is dropped anyway.
    """

    holds_live_state: Callable[[int], bool] = staticmethod(lambda partition: False)

    def persisted_offset(self, tp: TP) -> int | None:
        # -1: nothing of this partition is here, recover from the first record.
        return None if self.holds_live_state(tp.partition) else -1


class DurableProducer(faust_aiokafka.Producer):
    """Faust's producer, idempotent, and creating topics replicated as the service's own.

    Every output, internal and changelog record goes through this producer (the hot path
    sends its batches on it too). Idempotent: a batch retried after a lost answer, or after
    its partition's leader moved, is written once and in order, so a later batch can never
    land before an earlier one that failed (a gap the source-offset watermarks would skip).
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}

    async def create_topic(
        self,
        topic: str,
        partitions: int,
        replication: int,
        *,
        config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        # Faust declares the tables' changelogs and its leader topic with
        # topic_replication_factor, a number fixed before the cluster is known.
        app = self.transport.app
        assert isinstance(app, PipelineApp)
        brokers = len(faust_internals.aiokafka_producer(self).client.cluster.brokers())
        replicas = replication_factor(app.pipeline.settings.replication_factor, brokers)
        await super().create_topic(
            topic,
            partitions,
            replicas,
            config={**(config or {}), **durability_config(replicas)},
            **options,
        )


class DurableTransport(BatchTransport):
    Producer = DurableProducer


def create_app(settings: Settings) -> PipelineApp:
    app = PipelineApp(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        autodiscover=False,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        # Faust's own pages would show table contents, partition assignment, the cluster's
        # worker URLs and internals on the metrics port; the service serves only its own.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
        topic_partitions=settings.partitions,
        # Only a fallback: DurableProducer.create_topic resolves it from the cluster.
        topic_replication_factor=settings.replication_factor or 1,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=settings.batch_max_records,
        producer_max_request_size=LARGE_MESSAGE_BYTES,
        # The hot path fills whole batches itself; under the brokers' default 1 MB limit.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        # A worker restarted after a crash takes its predecessor's place at once: without
        # it the dead member holds its share of the partitions for the session timeout,
        # while the new one runs ahead on the rest (their events then count late).
        consumer_group_instance_id=settings.instance_id,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_ms / 3000),
        table_standby_replicas=0,
        stream_processing_timeout=STALL_TIMEOUT_S,
        datadir=str(settings.data_dir / "worker"),
        Table=StateTable,
    )
    # Values stay bytes (value_type=bytes: the raw serializer), as PartitionStore encodes
    # them; keys are JSON text.
    partition_table = app.Table(
        PARTITION_TABLE,
        partitions=settings.partitions,
        default=None,
        value_type=bytes,
        extra_topic_configs=CHANGELOG_CONFIG,
    )
    board_table = app.Table(
        BOARD_TABLE,
        partitions=1,
        default=None,
        value_type=bytes,
        extra_topic_configs=CHANGELOG_CONFIG,
    )
    # The live state is the only in-memory copy (see PartitionStore).
    partition_store = PartitionStore(partition_table, keep_copy=False, keeps_entries=False)
    board_store = PartitionStore(board_table, keep_copy=False)
    app.stores = [partition_store, board_store]
    pipeline = app.pipeline = Pipeline(settings, partition_store, board_store)
    assert isinstance(partition_table, StateTable) and isinstance(board_table, StateTable)
    partition_table.holds_live_state = lambda p: pipeline.has_state(settings.topic_events, p)
    board_table.holds_live_state = lambda p: pipeline.has_state(settings.topic_partials, p)
    for name in (*settings.input_topics, settings.topic_events, settings.topic_partials):
        app.topics.add(app.topic(name, key_serializer="raw", value_serializer="raw"))

    app.transport = DurableTransport(app.conf.broker_consumer, app)

    async def on_revoked(sender: Any, /, *revoked_sets: Any, signal: Any, **_: Any) -> None:
        (revoked,) = revoked_sets
        pipeline.forget_waiting_inputs((tp.topic, tp.partition) for tp in revoked)

    async def on_assigned(sender: Any, /, *assigned_sets: Any, signal: Any, **_: Any) -> None:
        (assigned,) = assigned_sets
        app.assigned_once = True
        pipeline.keep_only((tp.topic, tp.partition) for tp in assigned)

    app.on_partitions_revoked.connect(on_revoked)
    app.on_partitions_assigned.connect(on_assigned)

    async def on_recovered() -> None:
        recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
        if recovery.signal_recovery_start.is_set():
            # A newer rebalance interrupted this recovery. Faust swallows the RebalanceAgain
            # it raises while waiting for the changelogs (`except Exception` around
            # `_wait(signal_recovery_end.wait())` in faust/tables/recovery.py) and calls
            # this as if the recovery were complete: the tables then hold part of the
            # changelogs, and state loaded from them would lack the rest. The newer
            # recovery calls this again when it is done.
            log.info("recovery interrupted by a rebalance: state is loaded after the next one")
            return
        # Load state as soon as it is recovered, so /metrics shows the counts of an owned
        # partition before its next event arrives.
        assigned = app.consumer.assignment()
        pipeline.keep_only((tp.topic, tp.partition) for tp in assigned)
        # Side by side: a customer partition's state is decoded without the GIL (the
        # engine's restore_chunks), so a restart's loads take every core the worker has.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as loaders:
            for _ in loaders.map(lambda tp: pipeline.load(tp.topic, tp.partition), assigned):
                pass  # raises what a load raised
        # What recovery replayed for partitions whose state is live is a copy nobody reads.
        for partition in pipeline.partitions:
            partition_store.release(partition)
        for partition in pipeline.boards:
            board_store.release(partition)

    partition_table.on_recover(on_recovered)
    board_table.on_recover(on_recovered)

    if settings.idle_advance_ms is not None:

        async def advance_idle_stream() -> None:
            outputs = pipeline.idle_ticks(time.monotonic())
            consumer = app.consumer
            if outputs and isinstance(consumer, BatchConsumer):
                await consumer.send_outputs(outputs)

        app.timer(interval=min(1.0, settings.idle_advance_ms / 1000))(advance_idle_stream)
    return app
