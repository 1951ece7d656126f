"""A Faust consumer that hands whole fetched batches to the pipeline.

Faust's own consumer loop awaits each message through two tasks and an asyncio.wait,
then Event objects, channel queues and sensors: far more work per record than the
pipeline's own. This subclass keeps everything else Faust does (group membership, partition
assignment co-partitioned with the tables, changelog recovery, the web server) and
replaces only that loop: records of the pipeline's topics go to it a partition batch
at a time, and so do the tables' changelogs during a recovery, straight into the tables
(stream_app/runtime/recovery.py); any other record takes Faust's path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import faust
from aiokafka.codec import has_zstd
from aiokafka.errors import IllegalStateError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from stream_app._engine import key_partition
from stream_app.domain.gaps import GapGuard
from stream_app.domain.stalls import Resumed, StallDetector, Stalled
from stream_app.pipeline import Pipeline
from stream_app.runtime import faust_internals
from stream_app.runtime.recovery import RecoveryProgress, apply_changelog_batch, recovery_started_at
from stream_app.runtime.state_store import PartitionStore
from stream_app.runtime.topics import CHANGELOG_COMPRESSION, LARGE_MESSAGE_BYTES
from stream_app.stages.messages import Output

# topic, partition (None: by key), key, value, headers
Record = tuple[str, int | None, bytes | None, bytes | None, list[tuple[str, bytes]] | None]

log = logging.getLogger(__name__)

# How long the broker may hold a fetch that finds no new record (Faust sets 1,500 ms).
# aiokafka keeps one fetch in flight per broker and leaves out the partitions whose records
# are still buffered, so records written meanwhile to those partitions (the internal topics
# this worker just produced to, the inputs it just drained) wait for that fetch to time
# out, once per stage of the pipeline. With 100 ms an idle worker asks 10 times a second.
FETCH_MAX_WAIT_MS = 100
# How often a worker commits at most while a backlog lasts, as Kafka Streams'
# commit.interval.ms. Every stage's state carries the offsets it reflects, so a commit only
# shortens what a restart or the next owner reads again (and skips), while a commit per
# pass would add a round trip through the consumer's thread and the group coordinator to
# every pass of a backlog. A pass that leaves the worker caught up (every partition handed
# over to the end its last fetch told) commits at once: otherwise its last batches stayed
# uncommitted for the whole RECORDS_WAIT_S of the next, empty, wait (a third of the wall
# time of a 50,000-event drain).
COMMIT_INTERVAL_S = 1.0
# How long a pass waits for records, as Faust's own loop.
RECORDS_WAIT_S = 1.0
# How long a pass waits while a partition of the pipeline is assigned but paused (after a
# rebalance, until the recovery and the seek resume it): a fetch asks only for the
# partitions active when it begins, so one begun before the resume kept the pipeline's
# records waiting for up to RECORDS_WAIT_S, and with no partition active at all Faust
# sleeps that long without fetching. In the bench's two-worker runs, one worker's first
# records came a second after the other's (0.54 to 0.63 x one worker in four runs).
HELD_WAIT_S = 0.05


class PipelineApp(faust.App):
    """A Faust app that carries the pipeline its consumer hands batches to."""

    pipeline: Pipeline
    # The state stores whose changelog records the hot path produces after each batch.
    stores: list[PartitionStore]
    _recovery_progress: RecoveryProgress | None = None

    # Whether partitions were assigned to this worker once (a worker starting joins first).
    assigned_once = False

    def recovery_status(self) -> dict[str, Any] | None:
        """While the worker cannot serve its state yet: joining the group, replaying the
        changelogs (with progress), or in the rest of a rebalance (before the replay, and
        loading the replayed state after it); None once it serves what it holds."""
        progress = self.recovery_progress.document()
        if progress is not None and progress["changelogs"]:
            return {"phase": "replaying", **progress}
        if not self.assigned_once:
            return {"phase": "joining"}
        # A recovery that knows no changelog partition to replay yet is still setting up.
        if self.rebalancing or progress is not None:
            return {"phase": "rebalancing"}
        return None

    @property
    def recovery_progress(self) -> RecoveryProgress:
        """The progress of the tables' recovery (created once Faust's recovery exists)."""
        if self._recovery_progress is None:
            self._recovery_progress = RecoveryProgress(self.tables.recovery)  # type: ignore[attr-defined]
        return self._recovery_progress


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start(), which creates the fetcher.
        faust_internals.set_fetch_max_wait_ms(consumer, FETCH_MAX_WAIT_MS)
        return consumer

    async def on_thread_stop(self) -> None:
        # A worker stopping cleanly leaves the group at once, its partitions moving to the
        # others; only a crashed one keeps its static place for its successor.
        faust_internals.leave_group_when_stopped(self)
        await super().on_thread_stop()


class BatchConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_lock = asyncio.Lock()
        self._batch_sender: BatchSender | None = None
        # Per input partition: when a fetch of it last answered (aiokafka's clock), as of
        # the moment its last records were handed to the pipeline.
        self._polled_at_records: dict[Any, int | None] = {}
        # Offsets whose records' outputs (and state) were sent, not committed yet; each
        # commit comes after a flush that acknowledges them.
        self._uncommitted: dict[Any, int] = {}
        self._committed_at = time.monotonic()
        self._stalls: StallDetector | None = None
        self._stalls_generation: int | None = None
        # Internal partitions read again from their state's next offset (domain/gaps.py).
        self._gaps = GapGuard()
        # Stream partitions whose resume waits for the recovery's seek, and the rebalance
        # generation they were resumed in (see resume_partitions).
        self._resume_after_seek: set[Any] = set()
        self._resume_generation: int | None = None
        # The rebalance generation whose seek to the committed offsets is done, and how
        # many such seeks were done (see _unsought).
        self._sought_generation: int | None = None
        self._seek_epoch = 0
        # Whether that seek runs now, and the partitions whose fetches were dropped while
        # it ran (sought again at its end).
        self._seeking = False
        self._reread: set[Any] = set()

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        # Faust checks the assignment before flushing the producer; a rebalance during the
        # flush can leave nothing to commit, and aiokafka's commit({}) raises then. The
        # state carries its offsets, so a skipped commit only means a re-read, never a loss.
        owned = {tp: offset for tp, offset in offsets.items() if tp in self.assignment()}
        if not owned:
            return False
        return bool(await super()._commit(owned))

    def verify_event_path(self, now: float, tp: Any) -> None:
        """Faust's liveness check of a partition, run for every assigned one every
        2.5 x broker_commit_interval outside rebalances. Faust's own reads when its
        per-message stream last took an event, which this consumer replaces, so every
        partition would look stalled after stream_processing_timeout and a healthy worker
        would log errors for all of them, again and again. This one reads the offset the
        hot path handled and logs a stall (records waiting, none handled for
        stream_processing_timeout) once."""
        if not self._in_pipeline(tp):
            return  # the tables' changelogs: the recovery checks those
        generation = self.app.consumer_generation_id
        if self._stalls is None or generation != self._stalls_generation:
            self._stalls = StallDetector(float(self.app.conf.stream_processing_timeout))
            self._stalls_generation = generation
        state = self._tp_state(tp)
        if state is None or state.highwater is None or not state.has_valid_position:
            return
        handled = faust_internals.read_offsets(self).get(tp)
        waiting = state.highwater - (state.position if handled is None else handled + 1)
        seen = self._stalls.observe((tp.topic, tp.partition), now, handled, waiting)
        if isinstance(seen, Stalled):
            log.error("%s", seen.message())
        elif isinstance(seen, Resumed):
            log.info("%s", seen.message())

    def verify_recovery_event_path(self, now: float, tp: Any) -> None:
        """Faust's check that a changelog partition under recovery is being fetched
        counts from the consumer's start, not the recovery's: a recovery after a
        rebalance minutes into a run logged "has not sent fetch request since start" for
        every changelog partition it had just resumed. Only a recovery that has run for
        stream_processing_timeout without ending is checked (its progress is on
        /healthz all along)."""
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        started = recovery_started_at(recovery)
        if started is not None and now - started >= self.app.conf.stream_processing_timeout:
            super().verify_recovery_event_path(now, tp)

    def resume_partitions(self, tps: Any) -> None:
        """Faust's recovery resumes the stream partitions and only then seeks them to their
        committed offsets (faust/tables/recovery.py: `resume_partitions`, then
        `perform_seek`). A fetch answered in between starts wherever aiokafka's position
        stood: in the scale-out tests, a partition given back to a worker answered 16 and
        107 records past its committed offset, and records before the first one handled
        are skipped for good once a later one is counted (a source offset's watermark, a
        state's next offset). So the pipeline's partitions are resumed once the seek is
        done (perform_seek); the changelogs and Faust's own topics as Faust asks."""
        held = {tp for tp in tps if self._in_pipeline(tp)}
        if held:
            self._resume_after_seek |= held
            self._resume_generation = self.app.consumer_generation_id
        super().resume_partitions({tp for tp in tps if tp not in held})

    async def perform_seek(self) -> None:
        """Faust's seek of every assigned partition to its committed offset, then the
        pipeline's partitions held by resume_partitions resumed. aiokafka seeks only to a
        committed offset above 0: a partition with none is sought to its start here (the
        consumer's auto_offset_reset, "earliest"), whatever a fetch dropped during the
        rebalance left its position at."""
        generation = self.app.consumer_generation_id
        self._seeking = True
        self._reread.clear()  # fetched before this seek began: it covers them
        try:
            await super().perform_seek()
            committed = faust_internals.committed_offsets(self)
            assigned = self.assignment()
            never = {
                tp: 0 for tp in self._resume_after_seek if tp in assigned and not committed.get(tp)
            }
            if never:
                await self.seek_wait(never)
            # A fetch dropped while the seek ran may have held records from after it.
            while self._reread:
                reread, self._reread = self._reread, set()
                await self._seek_committed(reread)
            if self.app.consumer_generation_id == generation:
                self._sought_generation = generation
            self._seek_epoch += 1
        finally:
            self._seeking = False
            held, self._resume_after_seek = self._resume_after_seek, set()
            if self._resume_generation == self.app.consumer_generation_id:
                super().resume_partitions(held & self.assignment())

    async def wait_empty(self) -> None:
        # A rebalance waits here: the batch under way finishes first. What was handled
        # since the last commit is read again by whoever owns the partitions next, as
        # are the inputs the input merge still holds: the attributing stage skips
        # forwarded events it applied already by source offset, and every stage skips
        # records before the offset its state carries. The state sent is acknowledged
        # first: the next owner's recovery reads the changelog to its end as it finds it,
        # and a journal of ours landing after that would follow the next owner's own.
        async with self._batch_lock:
            if self._batch_sender is not None:
                await self._batch_sender.flush()
            self._uncommitted.clear()
            self._gaps.clear()
        await super().wait_empty()

    async def _drain_messages(self, fetcher: Any) -> None:
        try:
            await self._drain(fetcher)
        except asyncio.CancelledError:
            # Faust's own loop ends quietly when the worker stops: its Fetcher takes a
            # cancellation during a rebalance for one to restart from and crashes (it has
            # no supervisor), so a worker stopped then exited with an error.
            if self.transport.app.should_stop:
                return
            raise

    async def _drain(self, fetcher: Any) -> None:
        app = self.app
        assert isinstance(app, PipelineApp), "BatchTransport serves PipelineApp only"
        pipeline = app.pipeline
        while not (faust_internals.is_stopped(self) or faust_internals.is_stopped(fetcher)):
            seek_epoch = self._seek_epoch
            try:
                records = await self._next_records()
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    return
                raise
            records = records or {}
            fetched_to = self._positions(records)
            generation = app.consumer_generation_id
            await asyncio.sleep(0)
            if not self.flow_active:
                # A fetch answered after a rebalance began: its records may be of partitions
                # this worker is losing, whose state the rebalance drops (one handled then
                # made an empty state for a partition another worker owned). Faust's own
                # loop drops them too. They are given back: the recovery seeks the pipeline's
                # partitions to their committed offsets once the changelogs are read, but it
                # seeks the changelogs before it resumes the flow, and a fetch asked for
                # before the rebalance could answer in between.
                self._give_back(records, fetched_to)
                continue
            if records and (
                self._seeking
                or self._sought_generation != generation
                or self._seek_epoch != seek_epoch
            ):
                records = await self._unsought(records, generation)
            if self.should_stop or not (records or pipeline.waiting_inputs):
                if self._uncommitted and not self.should_stop:
                    await self._commit_uncommitted()
                continue
            inputs = {
                tp: batch for tp, batch in records.items() if batch and pipeline.is_input(tp.topic)
            }
            if inputs or pipeline.waiting_inputs:
                # Also without new input: what waits may leave once time or lag allow.
                await self._handle_inputs(pipeline, inputs, records)
            staged = {
                tp: batch
                for tp, batch in records.items()
                if batch and tp not in inputs and pipeline.handles(tp.topic)
            }
            if staged:
                await self._handle_batches(pipeline, staged)
            if self._uncommitted and (self._commit_due() or self._caught_up(pipeline)):
                await self._commit_uncommitted()
            others = {
                tp: batch
                for tp, batch in records.items()
                if batch and tp not in inputs and tp not in staged
            }
            if others:
                await self._hand_to_faust(others, generation, fetched_to)

    async def _next_records(self) -> Any:
        """One fetch, its records by partition (None or empty: none); shorter while a
        partition of the pipeline is assigned but not fetched yet (HELD_WAIT_S). Not
        Faust's own wait: with no partition active (after a rebalance, until the recovery
        and the seek resume them) it sleeps a whole second without fetching, and a wait
        begun while the flow was stopped found none active once it resumed (a worker's
        first records a second late in the bench's two-worker runs, 1 in 3 to 5)."""
        if not self.flow_active:
            # Faust's own wait, as in its loop (mode types it as its own Event).
            await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
        active = faust_internals.active_partitions(self)
        if not active:
            await asyncio.sleep(HELD_WAIT_S)
            return None
        timeout = HELD_WAIT_S if self._pipeline_paused(active) else RECORDS_WAIT_S
        return await faust_internals.fetch(self, active, timeout)

    def _pipeline_paused(self, active: set[Any]) -> bool:
        """Whether a partition of the pipeline is assigned and not among the `active`
        ones: after a rebalance, until the recovery and the seek to the committed offsets
        resume it."""
        return any(tp not in active for tp in self.assignment() if self._in_pipeline(tp))

    def _in_pipeline(self, tp: Any) -> bool:
        pipeline = self.app.pipeline if isinstance(self.app, PipelineApp) else None
        return pipeline is not None and (pipeline.is_input(tp.topic) or pipeline.handles(tp.topic))

    async def _unsought(
        self, records: dict[Any, list[Any]], generation: int
    ) -> dict[Any, list[Any]]:
        """The records of a fetch asked for before this generation's seek to the committed
        offsets was done, without the pipeline's: a fetch asked for before a rebalance can
        answer after it, from positions that fetches dropped during the rebalance moved
        past records nobody handled (a kept partition answered 9 records past its state's
        offset in the scale-out test). Their partitions are read again from the committed
        offsets: by the seek still to come in this generation, at the end of the one
        running now, or here, if it was done while this fetch waited (the fetch may hold
        records from after it: dropped without a seek, they were lost)."""
        dropped = {tp: batch for tp, batch in records.items() if batch and self._in_pipeline(tp)}
        if not dropped:
            return records
        log.info(
            "records fetched before the partitions were sought to their committed offsets "
            "are read again: %s",
            {tp: batch[0].offset for tp, batch in dropped.items()},
        )
        if self._seeking:
            self._reread |= set(dropped)
        elif self._sought_generation == generation:
            await self._seek_committed(dropped)
        return {tp: batch for tp, batch in records.items() if tp not in dropped}

    async def _hand_to_faust(
        self, records: dict[Any, list[Any]], generation: int, fetched_to: Mapping[Any, int]
    ) -> None:
        """Records of the tables' changelogs, during a recovery, go straight into the
        tables a partition batch at a time (stream_app/runtime/recovery.py); any other record
        takes Faust's own path. Both keep the guards of Faust's own loop: nothing once the
        flow is stopped or the generation has changed, and a record whose hand-over to
        Faust is still waiting (the recovery's queue is suspended during a rebalance) is
        abandoned when the flow stops.

        A record fetched for one recovery and handed to the next one, after that one has
        sought its partitions back to where it starts, would pass for the newest record
        read: the recovery skips every record up to its offset when they come again, while
        the records between were dropped from its queue at the rebalance. The state loaded
        then misses changelog entries (an open offer, so a conversion, in the scale-out
        test). Dropped here, they are given back (`_give_back`)."""
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        app = self.app
        progress = app.recovery_progress if isinstance(app, PipelineApp) else None
        pending = dict(records)
        for tp, batch in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation:
                break
            # Synchronous: the guards above hold until its last record is applied.
            if apply_changelog_batch(recovery, tp, batch, progress):
                # Faust's recovery loop gets the last record too: it skips it as read and
                # ends the recovery if nothing is left (stream_app/runtime/recovery.py).
                # If a rebalance began, the batch is read again: applying it twice puts the
                # same entries in the same order.
                if not await self._hand_over(tp, batch[-1:], generation):
                    break
                del pending[tp]
                continue
            handed = await self._hand_over(tp, batch, generation)
            if handed < len(batch):
                pending[tp] = batch[handed:]
                break
            del pending[tp]
        for tp, batch in pending.items():
            _log_dropped(tp, batch)
        self._give_back(pending, fetched_to)

    async def _hand_over(self, tp: Any, batch: list[Any], generation: int) -> int:
        """How many of the records went to Faust before the flow stopped. One wait for the
        whole batch: Faust's two tasks and asyncio.wait per record slowed recoveries."""
        handed = 0

        async def hand_over() -> None:
            nonlocal handed
            for record in batch:
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    return
                await self.callback(faust_internals.to_message(self, tp, record))
                faust_internals.read_offsets(self)[tp] = record.offset
                handed += 1

        await self.wait_first(hand_over(), self.suspend_flow.wait())
        return handed

    async def _handle_inputs(
        self, pipeline: Pipeline, inputs: dict[Any, list[Any]], fetched: Mapping[Any, Any]
    ) -> None:
        async with self._batch_lock:
            if not self.flow_active:
                return  # a rebalance began while this pass waited for the lock (see _drain)
            assigned = self.assignment()
            owned = {tp: batch for tp, batch in inputs.items() if tp in assigned}
            # Not validated yet: read again once their items can be handed over in order.
            waiting = {
                tp: batch[0].offset
                for tp, batch in owned.items()
                if not self._handoff_admits(pipeline, tp, fetched)
            }
            owned = {tp: batch for tp, batch in owned.items() if tp not in waiting}
            input_tps = {tp for tp in assigned if pipeline.is_input(tp.topic)}
            for tp in owned:
                self._polled_at_records[tp] = self._polled_at(tp)
            # A batch read again later holds the others back as records not read yet do.
            behind = {tp: tp in waiting or self._behind(tp) for tp in input_tps}
            outputs = pipeline.validate(
                {(tp.topic, tp.partition): batch for tp, batch in owned.items()},
                behind={(tp.topic, tp.partition): value for tp, value in behind.items()},
                quiet={
                    (tp.topic, tp.partition)
                    for tp, value in behind.items()
                    if value is False and self._polled_since_records(tp)
                },
            )
            # Not flushed and committed here: these offsets are committed with the next
            # commit's flush (two broker round trips fewer per fetch, the longest part of
            # a pass at low load). Records still waiting in the pipeline are not
            # committed: a restart reads them again.
            await self._sender().send(_output_records(outputs))
            if pipeline.handed_partitions:
                # As after an internal batch: the state is sent once the outputs it says
                # were made are durable, and the input offsets it reflects are committed
                # after a flush that acknowledges it.
                for partition in pipeline.handed_partitions:
                    pipeline.persist(pipeline.settings.topic_events, partition)
                pipeline.handed_partitions.clear()
                self._send_state()
            positions = pipeline.input_positions()
            self._uncommitted.update(
                {
                    tp: positions[(tp.topic, tp.partition)]
                    for tp in input_tps
                    if (tp.topic, tp.partition) in positions
                }
            )
            rewinds = pipeline.take_rewinds()
            seeks = {
                tp: rewinds[(tp.topic, tp.partition)]
                for tp in owned
                if (tp.topic, tp.partition) in rewinds
            }
            seeks.update(waiting)
            for tp, batch in owned.items():
                if tp not in seeks:
                    faust_internals.read_offsets(self)[tp] = batch[-1].offset
        if seeks:
            await self._seek_assigned(seeks)

    async def _seek_assigned(self, offsets: Mapping[Any, int]) -> None:
        """Seek partitions that are still assigned; one that is not any more is read from
        its committed offset by whoever owns it next, or by this worker after the
        rebalance (aiokafka resets every position then)."""
        for tp, offset in offsets.items():
            if tp not in self.assignment():
                continue
            try:
                await self.seek_wait({tp: offset})
            except IllegalStateError:
                log.info("%s was revoked before it could be read again from %d", tp, offset)

    async def _seek_committed(self, tps: Iterable[Any]) -> None:
        """Seek partitions still assigned to their committed offsets, as the recovery's
        seek left them (perform_seek): one with none above 0 to its start."""
        committed = faust_internals.committed_offsets(self)
        await self._seek_assigned({tp: committed.get(tp) or 0 for tp in tps})

    def _behind(self, tp: Any) -> bool | None:
        """Whether Kafka holds records of this partition not handed to us yet (None: not
        known yet). aiokafka's position moves past what getmany returned."""
        state = self._tp_state(tp)
        if state is None or state.highwater is None or not state.has_valid_position:
            return None
        return bool(state.position < state.highwater)

    def _caught_up(self, pipeline: Pipeline) -> bool:
        """Whether every partition the pipeline reads was handed over up to the end offset
        its last fetch told, and no input waits in the pipeline: nothing more to do until
        new records arrive."""
        if pipeline.waiting_inputs:
            return False
        return all(self._behind(tp) is False for tp in self.assignment() if self._in_pipeline(tp))

    def _positions(self, records: Mapping[Any, Any]) -> dict[Any, int]:
        """Where a fetch left the positions of the partitions it answered for."""
        positions = {}
        for tp in records:
            state = self._tp_state(tp)
            if state is not None and state.has_valid_position:
                positions[tp] = state.position
        return positions

    def _give_back(self, records: Mapping[Any, list[Any]], fetched_to: Mapping[Any, int]) -> None:
        """Fetched records not handled: each partition is sought back to the first of them
        if nothing sought it since the fetch (its position is the one the fetch left, from
        `_positions`), so that the next fetch brings them again. A partition sought since
        is read from where that seek put it: aiokafka hands out no record fetched before
        a seek, so a seek after the fetch is the newer word. Without this, changelog
        records fetched after the recovery's seek but dropped before it resumed the flow
        were never read: the recovery waited for them for good (a worker joining in the
        scripted-KPI test). Synchronous, so that no seek comes between the check and
        this one."""
        for tp, batch in records.items():
            state = self._tp_state(tp)
            if (
                batch
                and state is not None
                and state.has_valid_position
                and state.position == fetched_to.get(tp)
            ):
                try:
                    faust_internals.seek_at_once(self, tp, batch[0].offset)
                except IllegalStateError:
                    pass  # revoked meanwhile: its next owner reads it from where it starts

    def _tp_state(self, tp: Any) -> Any:
        """aiokafka's state of a partition, None unless it is assigned. The consumer thread
        changes the assignment during a rebalance, between any two lines of this one:
        aiokafka's own highwater() asserts the partition is assigned, which fails for one
        revoked in between, so read the state once and check it."""
        subscription = faust_internals.subscription(self)
        if subscription is None or subscription.assignment is None:
            return None
        return subscription.assignment.state_value(tp)

    def _polled_at(self, tp: Any) -> int | None:
        """When a fetch of this partition last answered, records or not (None: never)."""
        state = self._tp_state(tp)
        return None if state is None else state.timestamp

    def _polled_since_records(self, tp: Any) -> bool:
        """Whether a fetch of this caught-up partition answered after its last records were
        handed over, with nothing new: its next record is a live arrival (domain/merge.py)."""
        polled = self._polled_at(tp)
        return polled is not None and polled != self._polled_at_records.get(tp, polled)

    async def _handle_batches(self, pipeline: Pipeline, batches: dict[Any, list[Any]]) -> None:
        """One fetch of the internal topics: every partition's outputs, one flush, then
        every partition's state (not one of each per partition), and a flush and a commit
        when one is due (COMMIT_INTERVAL_S)."""
        async with self._batch_lock:
            if not self.flow_active:
                return  # a rebalance began while this pass waited for the lock (see _drain)
            assigned = self.assignment()
            owned = {
                tp: batch
                for tp, batch in batches.items()
                if tp in assigned and pipeline.has_state(tp.topic, tp.partition)
            }
            unloaded = {
                tp: batch[0].offset
                for tp, batch in batches.items()
                if tp in assigned and tp not in owned
            }
            if unloaded:
                # Fetched before a rebalance whose recovery has not loaded these partitions'
                # state yet: a state rebuilt now from a half-replayed changelog would pass
                # for the whole one. Read the records again later (seek_wait runs on the
                # consumer's own thread, as aiokafka needs).
                log.info("records wait for their partitions' state to be recovered: %s", unloaded)
            for tp, batch in list(owned.items()):
                next_offset = pipeline.next_offset(tp.topic, tp.partition)
                if next_offset is None:
                    continue
                skipped = self._gaps.check((tp.topic, tp.partition), batch[0].offset, next_offset)
                if skipped is None:
                    continue
                log.warning("%s", skipped.message())
                if not skipped.gone:
                    unloaded[tp] = next_offset
                    del owned[tp]
            if unloaded:
                await self._seek_assigned(unloaded)
            if not owned:
                return
            sender = self._sender()
            # One send for every partition's outputs: aiokafka holds one batch per topic
            # partition and one request in flight per broker, so a second batch for the same
            # partition (every attribute sends its partials to partials partition 0) waited
            # for the produce request before it: a broker round trip per fetched partition,
            # about a quarter of each batch's time in a latency trace at 1,000 events/s.
            outputs: list[Output] = []
            now = pipeline.now()
            for tp, batch in owned.items():
                outputs.extend(pipeline.handle(tp.topic, tp.partition, batch, now))
            await sender.send(_output_records(outputs))
            for tp in owned:
                pipeline.persist(tp.topic, tp.partition)
            # Sent once the outputs are durable: the state says they were made.
            self._send_state()
            await self._finish_batches(owned)

    def _send_state(self) -> None:
        """Send the changelog records the state stores hold since the last call, once
        every record sent before them is acknowledged."""
        app = self.app
        assert isinstance(app, PipelineApp)
        records: list[Record] = [
            (topic, partition, key, value, None)
            for store in app.stores
            for topic, partition, key, value in store.take_outbox()
        ]
        if records:
            self._sender().send_after_acknowledged(records)

    def _handoff_admits(self, pipeline: Pipeline, tp: Any, fetched: Mapping[Any, Any]) -> bool:
        """Whether this input partition's batch may be validated now (stages/handoff.py):
        the facts the hand-over needs about its events-by-customer partition."""
        events_tp = TP(pipeline.settings.topic_events, tp.partition)
        state = self._tp_state(events_tp)
        read = None
        pending = fetched.get(events_tp)
        if pending:
            # Handled after this pass's inputs, but every record before them was handled
            # already: while another worker keeps writing to the partition, most fetches
            # hold some of its records, and waiting for one without them kept this input
            # partition being read again and again.
            read = pending[0].offset
        elif state is not None and state.has_valid_position:
            read = state.position  # every record before it was handled when it came
        partitions = faust_internals.topic_partitions(self, tp.topic)
        return pipeline.handoff.admit(
            (tp.topic, tp.partition),
            None if partitions is None else len(partitions),
            pipeline.has_state(events_tp.topic, events_tp.partition),
            read,
            None if state is None else state.highwater,
        )

    async def send_outputs(self, outputs: list[Output]) -> None:
        """Produce outputs made outside a batch (idle ticks), between batches."""
        async with self._batch_lock:
            sender = self._sender()
            await sender.send(_output_records(outputs))
            await sender.flush()

    def _sender(self) -> BatchSender:
        if self._batch_sender is None:
            producer: Any = self.app.producer
            self._batch_sender = BatchSender(faust_internals.aiokafka_producer(producer))
        return self._batch_sender

    def _commit_due(self) -> bool:
        return time.monotonic() - self._committed_at >= COMMIT_INTERVAL_S

    async def _commit_uncommitted(self) -> None:
        async with self._batch_lock:
            if self._uncommitted:
                await self._sender().flush()
                await self._commit_flushed()

    async def _commit_flushed(self) -> None:
        """Commit what is uncommitted; every record sent so far is acknowledged."""
        offsets, self._uncommitted = self._uncommitted, {}
        self._committed_at = time.monotonic()
        await faust_internals.commit_offsets(self, offsets)

    async def _finish_batches(self, batches: dict[Any, list[Any]]) -> None:
        # Every output and state record is acknowledged before its input offset is
        # committed, so the flush comes with the commit: each state waits for every
        # record sent before it, its own state's and outputs' included, and none is sent
        # after one failed (BatchSender.send_after_acknowledged). A rebalance flushes
        # before it lets go of the partitions (wait_empty).
        self._uncommitted.update({tp: batch[-1].offset + 1 for tp, batch in batches.items()})
        if self._commit_due():
            await self._sender().flush()
            await self._commit_flushed()
        lag = self.app.pipeline.lag if isinstance(self.app, PipelineApp) else {}
        # A rebalance may have taken partitions away during the awaits: aiokafka knows
        # no highwater for those.
        assigned = self.assignment()
        for tp, batch in batches.items():
            if tp not in assigned:
                continue
            faust_internals.read_offsets(self)[tp] = batch[-1].offset
            state = self._tp_state(tp)
            highwater = None if state is None else state.highwater
            if highwater is not None and highwater >= 0:
                lag[(tp.topic, tp.partition)] = max(0, highwater - batch[-1].offset - 1)
        if isinstance(self.app, PipelineApp):
            self.app.pipeline.touch()


def _log_dropped(tp: Any, records: list[Any]) -> None:
    log.info(
        "a rebalance began: %d records of %s from offset %d on are dropped, and read again",
        len(records),
        tp,
        records[0].offset,
    )


def _output_records(outputs: list[Output]) -> Iterator[Record]:
    for output in outputs:
        yield output.topic, output.partition, output.key, output.value, output.headers


class BatchSender:
    """Produces records a whole batch per topic partition on aiokafka's producer.

    One `send` per message through Faust (and even aiokafka's own `send`) costs several
    times what building the batches does. Delivery failures are raised by `flush`, so
    that nothing is committed after a lost output.
    """

    # Keys whose partition is remembered, per topic: the same keys come back again and
    # again, and aiokafka's murmur2 is pure Python (2-3 % of a worker's CPU; a new key is
    # hashed by the compiled one). Bounded so that ever new keys cannot grow it.
    KEY_PARTITIONS_HELD = 50_000
    # `compressed` batches: the changelogs' codec (topics.CHANGELOG_CONFIG), and as many
    # bytes before compression as fit a changelog record at worst. A snapshot of several
    # MB goes in a few produce requests: aiokafka holds one batch per partition, so each
    # further batch of a partition waits for the request before it.
    COMPRESSION = {"zstd": DefaultRecordBatch.CODEC_ZSTD}[CHANGELOG_COMPRESSION]
    COMPRESSED_BATCH_BYTES = LARGE_MESSAGE_BYTES // 4

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._pending: list[asyncio.Future[Any]] = []
        # Changelog records held until what was sent before them is acknowledged
        # (`send_after_acknowledged`), oldest first, each with the deliveries it waits for;
        # the task that sends them, and the deliveries of what it sent last.
        self._held: deque[tuple[list[asyncio.Future[Any]], list[Record]]] = deque()
        self._pump: asyncio.Task[None] | None = None
        self._held_sent: list[asyncio.Future[Any]] = []
        self._known_topics: set[str] = set()
        # Per topic: the partitions the remembered choices were made among, and the choices.
        self._key_partitions: dict[str, tuple[list[int], dict[bytes, int]]] = {}

    async def send(self, records: Iterable[Record], compressed: bool = False) -> None:
        """Queue the records; `compressed`: in the changelogs' codec (these go to the
        changelog topics), else as the producer is configured."""
        self._pending += await self._queue(records, compressed)

    def send_after_acknowledged(self, records: list[Record]) -> None:
        """Send these changelog records once every record sent before them is
        acknowledged, without waiting for that here: a state is durable only after the
        outputs it says were made, as with a flush before it, while the pipeline goes on
        with the next batch (a flush per batch kept the worker waiting for the broker a
        fifth of its time). They are sent in the order of these calls, those ready
        together (one round trip per group, not per batch), and none after a record
        before it failed: `flush` raises that failure."""
        self._raise_held_failure()
        self._held.append((list(self._pending), records))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._send_held())

    def _raise_held_failure(self) -> None:
        """Raise what stopped the held sends, if they ended in a failure."""
        pump = self._pump
        if pump is not None and pump.done() and not pump.cancelled():
            failed = pump.exception()
            if failed is not None:
                raise failed

    async def _send_held(self) -> None:
        held = self._held
        while held:
            # A group waits for the group sent before it, so that no journal lands after
            # one that was lost.
            await _acknowledged(held[0][0] + self._held_sent)
            records: list[Record] = []
            while held and all(future.done() for future in held[0][0]):
                before, waiting = held.popleft()
                await _acknowledged(before)  # done: raises a failure among them
                records += waiting
            self._held_sent = await self._queue(records, compressed=True)
            self._pending += self._held_sent

    async def _queue(
        self, records: Iterable[Record], compressed: bool
    ) -> list[asyncio.Future[Any]]:
        """Hand the records to the producer a batch per partition; their futures."""
        sent: list[asyncio.Future[Any]] = []
        producer = self._producer
        new_batch = self._compressed_batch if compressed else producer.create_batch
        builders: dict[tuple[str, int], Any] = {}
        # Per topic, resolved once per call: where a record without a partition goes.
        choosers: dict[str, Callable[[bytes | None], int]] = {}
        for topic, partition, key, value, headers in records:
            if partition is None:
                choose = choosers.get(topic)
                if choose is None:
                    choose = choosers[topic] = await self._chooser(topic)
                partition = choose(key)
            builder = builders.get((topic, partition))
            if builder is None:
                if topic not in self._known_topics:
                    await self._track(topic)
                builder = builders[(topic, partition)] = new_batch()
            if builder.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                sent.append(await producer.send_batch(builder, topic, partition=partition))
                builder = builders[(topic, partition)] = new_batch()
                if (
                    builder.append(key=key, value=value, timestamp=None, headers=headers or [])
                    is None
                ):
                    raise ValueError(f"a record for {topic} is larger than a batch")
        for (topic, partition), builder in builders.items():
            if builder.record_count():
                sent.append(await producer.send_batch(builder, topic, partition=partition))
        return sent

    def _compressed_batch(self) -> BatchBuilder:
        if not has_zstd():
            raise RuntimeError(
                "the changelogs are written zstd-compressed and aiokafka finds no zstd "
                "codec: install aiokafka[zstd] (cramjam)"
            )
        # Not transactional: the worker's producer is idempotent, without transactions.
        return BatchBuilder(self.COMPRESSED_BATCH_BYTES, self.COMPRESSION, is_transactional=False)

    async def _track(self, topic: str) -> None:
        # Tracked explicitly: aiokafka asks for every topic's metadata only while it tracks
        # none, and once another topic is added, one it found that way drops out of its
        # metadata (unknown leaders, a metadata storm, no sends).
        producer = self._producer
        await producer.client.add_topic(topic)
        await faust_internals.wait_on_metadata(producer, topic)
        self._known_topics.add(topic)

    async def _chooser(self, topic: str) -> Callable[[bytes | None], int]:
        """aiokafka's own choice of partition for a key (murmur2 of the key), as its send
        would make it, remembered per key while the topic's partitions stay the same."""
        producer = self._producer
        if topic not in self._known_topics:
            await self._track(topic)
        metadata = faust_internals.producer_metadata(producer)
        if metadata.partitions_for_topic(topic) is None:
            # A metadata refresh (after a reconnect, say) can come back without the topic
            # for a moment: ask again, as aiokafka's send does every time.
            await faust_internals.wait_on_metadata(producer, topic)
        every = list(metadata.partitions_for_topic(topic) or ())
        available = list(metadata.available_partitions_for_topic(topic) or ())
        partitioner = faust_internals.producer_partitioner(producer)
        held = self._key_partitions.get(topic)
        if held is None or held[0] != every:
            held = self._key_partitions[topic] = (every, {})
        chosen = held[1]

        def choose(key: bytes | None) -> int:
            if key is None:  # a random partition: nothing to remember
                return int(partitioner(key, every, available))
            partition = chosen.get(key)
            if partition is None:
                if len(chosen) >= self.KEY_PARTITIONS_HELD:
                    chosen.clear()
                partition = chosen[key] = (
                    every[key_partition(key, len(every))]  # the same murmur2, compiled
                    if type(partitioner) is DefaultPartitioner
                    else partitioner(key, every, available)
                )
            return partition

        return choose

    async def flush(self) -> None:
        """Wait until every record sent so far, held ones included, is acknowledged;
        raise if one was not."""
        while self._pump is not None and not self._pump.done():
            # Shielded: a cancelled flush must not cancel the sends, whose records are
            # taken from the state stores already; the next flush waits for them again.
            await asyncio.shield(self._pump)
        self._raise_held_failure()
        pending, self._pending = self._pending, []
        await _acknowledged(pending)


async def _acknowledged(futures: list[asyncio.Future[Any]]) -> None:
    """Wait for these deliveries; raise the first failure."""
    if futures:
        await asyncio.wait(futures)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer
