"""Changelog recovery a fetched batch at a time, straight into the tables' in-memory stores.

Faust replays a changelog one record at a time: each one becomes a Message and an Event,
is decoded through the topic's schema, queued, taken off the queue by
`Recovery._slurp_changelogs` (two f-string debug lines each), buffered and then applied.
That costs far more than the record's own work: a restart would take a time that grows
with every event processed since the changelog was last compacted.

`apply_changelog_batch` does what that path does to a table of in-memory store, for a
whole partition batch at once: records at or below the offset the recovery has already
read are skipped, the others are applied in log order (a tombstone deletes its key), and
the recovery's offset of the partition moves to the last one. Keys are read by
`fastjson.loads`; values are kept as written (PartitionStore.load reads them).

Ending the recovery stays with `_slurp_changelogs`: the caller hands it the batch's last
record too, which it skips as read and then finds nothing left. It pulses the end signal
(set, then cleared on its next turn) for the waiter already waiting; a signal set here
and left set ended the next recovery before it read anything (the scale-out test's
workers loaded empty states).

The caller keeps the guards of Faust's consumer loop (flow active, same generation as the
fetch) and calls this synchronously: no rebalance can start between the check and the
last record applied. Records of anything else (a standby, a table with another store or a
changelog-event hook) return False and take Faust's own path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any

from faust.stores.memory import Store as MemoryStore

from stream_app.domain.fastjson import loads
from stream_app.runtime import faust_internals

log = logging.getLogger(__name__)


def recovery_document(
    changelogs: Sequence[tuple[str, int, int, int]], elapsed_s: float
) -> dict[str, Any]:
    """What a recovering worker says about its progress (/healthz, /api/rates).

    `changelogs`: per changelog partition being replayed, (topic, partition, records
    replayed, records to replay in all), counted in offsets since the recovery began (a
    compacted changelog has gaps, so the total is an upper bound). The estimate assumes
    the rate so far holds.
    """
    replayed = sum(done for _, _, done, _ in changelogs)
    total = sum(whole for _, _, _, whole in changelogs)
    rate = replayed / elapsed_s if elapsed_s > 0 else None
    left = total - replayed
    return {
        "records_replayed": replayed,
        "records_total": total,
        "fraction": round(replayed / total, 4) if total else 1.0,
        "elapsed_s": round(elapsed_s, 1),
        "records_per_second": None if rate is None else round(rate),
        "estimated_seconds_left": (round(left / rate, 1) if rate else None) if left else 0.0,
        "changelogs": [
            {
                "topic": topic,
                "partition": partition,
                "records_replayed": done,
                "records_total": whole,
            }
            for topic, partition, done, whole in sorted(changelogs)
        ],
    }


def recovery_started_at(recovery: Any) -> float | None:
    """When (time.monotonic) Faust's running recovery began; None when none runs."""
    started_at = faust_internals.recovery_began_at(recovery)
    return started_at if recovery.in_recovery else None


class RecoveryProgress:
    """Watches Faust's recovery of the tables' changelogs for the progress documents.

    Faust keeps, per active changelog partition, the offset read so far and the last
    offset to read; the offsets a recovery began from are noted the first time it is
    seen (`observe` runs before every batch applied, so that is its start).
    """

    def __init__(self, recovery: Any, clock: Callable[[], float] = monotonic) -> None:
        self._recovery = recovery
        self._clock = clock
        self._began: tuple[float, dict[Any, int]] | None = None

    def observe(self) -> None:
        recovery = self._recovery
        started_at = recovery_started_at(recovery)
        if started_at is None:
            return
        if self._began is None or self._began[0] != started_at:
            self._began = (started_at, {})
        starts = self._began[1]
        for tp in recovery.active_tps:
            if tp not in starts:
                starts[tp] = int(recovery.active_offsets.get(tp) or -1)

    def document(self) -> dict[str, Any] | None:
        """The progress while a recovery runs, else None."""
        recovery = self._recovery
        if not recovery.in_recovery:
            return None
        self.observe()
        assert self._began is not None
        started_at, starts = self._began
        changelogs = []
        for tp, start in starts.items():
            highwater = recovery.active_highwaters.get(tp)
            if highwater is None or tp not in recovery.active_tps:
                continue
            read = recovery.active_offsets.get(tp)
            read = start if read is None else int(read)
            total = max(0, int(highwater) - start)
            changelogs.append(
                (str(tp.topic), int(tp.partition), min(total, max(0, read - start)), total)
            )
        return recovery_document(changelogs, self._clock() - started_at)


def apply_changelog_batch(
    recovery: Any, tp: Any, records: Sequence[Any], progress: RecoveryProgress | None = None
) -> bool:
    """Apply a fetched batch of one active changelog partition; False if it is not ours."""
    if tp not in recovery.active_tps:
        return False
    if progress is not None:
        progress.observe()
    table = recovery.tp_to_table.get(tp)
    store = getattr(table, "data", None)
    if type(store) is not MemoryStore or faust_internals.changelog_event_hook(table) is not None:
        return False
    # Whatever Faust's path buffered goes first, so that the log's order holds.
    recovery.flush_buffers()
    offsets = recovery.active_offsets
    seen = offsets.get(tp)
    data, key_partition = store.data, faust_internals.key_partitions(store)
    to_key = faust_internals.key_decoder(table)
    partition = tp.partition
    for record in records:
        if seen is not None and record.offset <= seen:
            continue
        seen = record.offset
        try:
            key = to_key(loads(record.key))
        except (TypeError, ValueError) as error:
            # Not written by this service; Faust's path logs and skips such a record too.
            log.warning(
                "changelog record %s offset %d is not JSON, skipped: %s", tp, record.offset, error
            )
            continue
        # Kept encoded: most values are replaced by a later record before the state is
        # loaded, and decoding them all would be a large share of a restart
        # (PartitionStore.load decodes the ones left).
        value = record.value
        if value is None:
            data.pop(key, None)
            key_partition.pop(key, None)
        else:
            data[key] = value
            key_partition[key] = partition
    now = monotonic()
    if seen is not None:
        offsets[tp] = seen
    faust_internals.mark_recovery_active(recovery, tp, now)
    return True
