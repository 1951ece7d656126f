"""A Faust consumer that hands whole fetched batches to the pipeline.

Faust's own consumer loop awaits each message through two tasks and an asyncio.wait,
then Event objects, channel queues and sensors (about 3% of the bare consumer's speed,
see docs). This subclass keeps everything else Faust does (group membership, partition
assignment co-partitioned with the tables, changelog recovery, the web server) and
replaces only that loop: records of the pipeline's topics go to it a partition batch
at a time; every other record (table changelogs during recovery) takes Faust's path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream_app.pipeline import Output, Pipeline

log = logging.getLogger(__name__)


class PipelineApp(faust.App):
    """A Faust app that carries the pipeline its consumer hands batches to."""

    pipeline: Pipeline


class BatchConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_lock = asyncio.Lock()

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        # Faust checks the assignment before flushing the producer; a rebalance during the
        # flush left nothing to commit and aiokafka's commit({}) crashed the worker. The
        # state carries its offsets, so a skipped commit only means a re-read, never a loss.
        owned = {tp: offset for tp, offset in offsets.items() if tp in self.assignment()}
        if not owned:
            return False
        return bool(await super()._commit(owned))

    async def wait_empty(self) -> None:
        # A rebalance waits here: the batch under way finishes and commits first.
        async with self._batch_lock:
            pass
        await super().wait_empty()

    async def _drain_messages(self, fetcher: Any) -> None:
        app = self.app
        assert isinstance(app, PipelineApp), "BatchTransport serves PipelineApp only"
        pipeline = app.pipeline
        callback = self.callback
        while not (self._stopped.is_set() or fetcher._stopped.is_set()):
            try:
                records, _ = await self._wait_next_records(1.0)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    return
                raise
            await asyncio.sleep(0)
            records = records or {}
            if self.should_stop or not (records or pipeline.waiting_inputs):
                continue
            inputs = {tp: batch for tp, batch in records.items()
                      if batch and pipeline.is_input(tp.topic)}
            if inputs or pipeline.waiting_inputs:
                # Also without new input: what waits may leave once time or lag allow.
                await self._handle_inputs(pipeline, inputs)
            for tp, batch in records.items():
                if not batch or tp in inputs:
                    continue
                if pipeline.handles(tp.topic):
                    await self._handle_batch(pipeline, tp, batch)
                    continue
                for record in batch:
                    await callback(self._to_message(tp, record))
                    self._read_offset[tp] = record.offset

    async def _handle_inputs(self, pipeline: Pipeline, inputs: dict[Any, list[Any]]) -> None:
        async with self._batch_lock:
            assigned = self.assignment()
            owned = {tp: batch for tp, batch in inputs.items() if tp in assigned}
            input_tps = {tp for tp in assigned if pipeline.is_input(tp.topic)}
            outputs = pipeline.validate(
                {(tp.topic, tp.partition): batch for tp, batch in owned.items()},
                behind={(tp.topic, tp.partition): self._behind(tp) for tp in input_tps})
            await self._send(outputs)
            await self.app.producer.flush()
            # Records still waiting in the pipeline are not committed: a restart reads
            # them again.
            positions = pipeline.input_positions()
            await self._commit_offsets({
                tp: positions[(tp.topic, tp.partition)] for tp in input_tps
                if (tp.topic, tp.partition) in positions})
            for tp, batch in owned.items():
                self._read_offset[tp] = batch[-1].offset

    def _behind(self, tp: Any) -> bool | None:
        """Whether Kafka holds records of this partition not handed to us yet (None: not
        known yet). aiokafka's position moves past what getmany returned."""
        consumer = self._thread._ensure_consumer()
        highwater = consumer.highwater(tp)
        state = consumer._subscription.subscription.assignment.state_value(tp)
        if highwater is None or state is None or not state.has_valid_position:
            return None
        return bool(state.position < highwater)

    async def _handle_batch(self, pipeline: Pipeline, tp: Any, batch: list[Any]) -> None:
        async with self._batch_lock:
            if tp not in self.assignment():
                return
            await self._send(pipeline.stage_of(tp.topic)(tp.partition, batch))
            # The outputs are durable before the state that says they were made.
            await self.app.producer.flush()
            pipeline.persist(tp.topic, tp.partition)
            await self._commit_batches({tp: batch})

    async def send_outputs(self, outputs: list[Output]) -> None:
        """Produce outputs made outside a batch (idle ticks), between batches."""
        async with self._batch_lock:
            await self._send(outputs)
            await self.app.producer.flush()

    async def _send(self, outputs: list[Output]) -> None:
        send = self.app.producer.send
        for output in outputs:
            await send(output.topic, output.key, output.value, output.partition, None,
                       output.headers)

    async def _commit_batches(self, batches: dict[Any, list[Any]]) -> None:
        # _commit_offsets flushes the producer before it commits.
        await self._commit_offsets({tp: batch[-1].offset + 1 for tp, batch in batches.items()})
        lag = self.app.pipeline.lag if isinstance(self.app, PipelineApp) else {}
        for tp, batch in batches.items():
            self._read_offset[tp] = batch[-1].offset
            highwater = self.highwater(tp)
            if highwater is not None and highwater >= 0:
                lag[(tp.topic, tp.partition)] = max(0, highwater - batch[-1].offset - 1)


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer
