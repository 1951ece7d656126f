"""Durable per-partition state on a changelog-backed Faust table, written a batch at a time.

Each batch's changes are written once, as a journal: records keyed
`<partition>|journal|<sequence>|<i>`, each holding the batch's sequence number, its number of
chunks and a part of its changes (no message grows with the batch). Every key is new, so
compaction keeps every journal until it is deleted. Once the journals written since the
last checkpoint hold CHECKPOINT_BYTES, their changes, merged (a key changed by many
batches is written once), are written as plain entries `<partition>|<key>`, and then every
one of those journals is deleted (a tombstone per chunk). What a changelog holds after
compaction is then the live state plus at most CHECKPOINT_BYTES of journal.

On recovery the state is the entries, then the journals that are left applied in sequence
order. That is exact wherever a worker stopped, since Kafka keeps a partition's records in
order:
- in a batch's journal: its last chunk is missing, and the batch is ignored (the state
  carries the input offset it reflects, so the batch is read again and applied once);
- in a checkpoint's entries: the journals are all there, and newer than any entry;
- in its tombstones: the journals left are the newest ones (chunks are deleted in the order
  they were written), and each key ends with its newest value.
Journals that were loaded are merged into the next checkpoint and deleted with it.

Two earlier layouts are still read, so that a changelog written in them loads: the whole
state written twice, as `<partition>|journal|<i>` chunks (one key per chunk index,
overwritten by each batch) and then as entries, and a single `<partition>|journal` entry;
both are applied before the newer journals and deleted by the next checkpoint.

The records are encoded here and queued in `outbox`; the hot path produces them straight
to the changelog topic (keys and values JSON, as Faust's own table serializers write and
recovery reads them) on the same producer as the batch's outputs, and flushes it before
committing. Faust's per-message `send_changelog` cost more than the processing itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from stream_app.domain.fastjson import dumps as _dumps
from stream_app.domain.fastjson import loads as _loads

log = logging.getLogger(__name__)

JOURNAL_KEY = "journal"
_CHUNK_PREFIX = f"{JOURNAL_KEY}|"
# Well under Kafka's default 1 MB message limit, and big enough that a chunk's overhead
# (one record) is nothing next to its contents.
CHUNK_BYTES = 256 * 1024
# Journal bytes per partition between two checkpoints: what a recovery replays beyond the
# live state, and what the worker holds (encoded) until it writes the checkpoint.
CHECKPOINT_BYTES = 2 * 1024 * 1024

ChangelogRecord = tuple[str, int, bytes, bytes | None]  # topic, partition, key, value


@dataclass
class _Pending:
    """A partition's changes journaled since its last checkpoint."""

    # Store key (without the partition prefix) -> its newest value, encoded (None: deleted).
    changes: dict[str, bytes | None] = field(default_factory=dict)
    # The journal keys to delete once those changes are entries, in the order written.
    journal_keys: list[str] = field(default_factory=list)
    size: int = 0


def _decoded(partition: int, key: str, raw: bytes) -> Any:
    try:
        return _loads(raw)
    except ValueError as error:
        # Not written by this service; Faust's own recovery skips such a record too.
        log.warning("changelog entry %d|%s is not JSON, skipped: %s", partition, key, error)
        return None


class PartitionStore:
    """`keep_copy=False` (the worker): the table's in-memory data is read once, when a
    partition's state is loaded, and then dropped; the live state is the only copy. That
    halves the memory per open offer. It is sound because Faust's in-memory store has no
    persisted offset: a partition newly assigned to this worker is always recovered by
    replaying its changelog from the start into the data, and a partition kept across a
    rebalance is never loaded again (call `release` after a recovery to drop what it
    replayed for partitions whose state is live). `keep_copy=True` mirrors every record
    written into the data, for tests that restart from the same table without a changelog.
    """

    def __init__(self, table: Any, keep_copy: bool = True) -> None:
        self._table = table
        self._keep_copy = keep_copy
        self._sequence: dict[int, int] = {}
        self._pending: dict[int, _Pending] = {}
        # Encoded changelog records waiting for the hot path to produce them, in order.
        self.outbox: list[ChangelogRecord] = []

    def _topic(self) -> str:
        changelog = getattr(self._table, "changelog_topic", None)
        return "" if changelog is None else str(changelog.get_topic_name())

    def load(self, partition: int) -> dict[str, Any]:
        prefix = f"{partition}|"
        data = self._table.data
        # One pass over every partition's keys (a restart loads each partition in turn).
        stored = [key for key in data if isinstance(key, str) and key.startswith(prefix)]
        # The batch recovery keeps values encoded (stream_app/runtime/recovery.py); no value this
        # store writes is bytes once decoded.
        entries = {}
        for key in stored:
            value = data[key]
            short = key[len(prefix) :]
            entries[short] = (
                _decoded(partition, short, value) if isinstance(value, bytes) else value
            )
        if not self._keep_copy:
            for key in stored:
                del data[key]
        pending = self._pending[partition] = _Pending()
        journals: list[dict[str, Any]] = []
        legacy = entries.pop(JOURNAL_KEY, None)
        if legacy is not None:
            pending.journal_keys.append(JOURNAL_KEY)
            journals.append(legacy)
        # sequence -> chunk index -> (chunk count, changes)
        batches: dict[int, dict[int, tuple[int, dict[str, Any]]]] = {}
        fixed_slots: dict[int, Any] = {}  # the older format: one key per chunk index
        for key in [k for k in entries if k.startswith(_CHUNK_PREFIX)]:
            chunk = entries.pop(key)
            pending.journal_keys.append(key)
            parts = key[len(_CHUNK_PREFIX) :].split("|")
            if chunk is None:
                continue
            if len(parts) == 1:
                fixed_slots[int(parts[0])] = chunk
            else:
                sequence, count, changes = chunk
                batches.setdefault(sequence, {})[int(parts[1])] = (count, changes)
        latest = 0
        if fixed_slots:
            latest = max(chunk[0] for chunk in fixed_slots.values())
            count = next(chunk[1] for chunk in fixed_slots.values() if chunk[0] == latest)
            if all(
                index in fixed_slots and fixed_slots[index][0] == latest for index in range(count)
            ):
                for index in range(count):
                    journals.append(fixed_slots[index][2])
        for sequence in sorted(batches):
            chunks = batches[sequence]
            count = next(iter(chunks.values()))[0]
            latest = max(latest, sequence)
            if count - 1 not in chunks:
                continue  # the worker stopped while writing it: read again from its offset
            journals.extend(chunks[index][1] for index in sorted(chunks))
        self._sequence[partition] = max(self._sequence.get(partition, 0), latest)
        for changes in journals:
            entries.update(changes)
            for key, value in changes.items():
                raw = None if value is None else _dumps(value)
                pending.changes[key] = raw
                pending.size += len(key) + (0 if raw is None else len(raw))
        return {key: value for key, value in entries.items() if value is not None}

    def release(self, partition: int) -> None:
        """Drop the in-memory copy of a partition's entries (its state is live elsewhere)."""
        if self._keep_copy:
            return
        prefix = f"{partition}|"
        data = self._table.data
        for key in [k for k in data if isinstance(k, str) and k.startswith(prefix)]:
            del data[key]

    def write(self, partition: int, changes: dict[str, Any]) -> None:
        """Queue the batch's changes; the caller produces and flushes them before committing."""
        if not changes:
            return
        topic, out = self._topic(), self.outbox
        first = len(out)
        sequence = self._sequence[partition] = self._sequence.get(partition, 0) + 1
        pending = self._pending.get(partition)
        if pending is None:
            pending = self._pending[partition] = _Pending()
        prefix = f"{partition}|"
        merged = pending.changes
        # A chunk is spliced from the values' encodings: each value is encoded once. An
        # entry's key inside a chunk is its store key, JSON-encoded.
        chunks: list[list[bytes]] = [[]]
        size = 0
        for key, value in changes.items():
            raw = None if value is None else _dumps(value)
            merged[key] = raw
            piece = b"%s:%s" % (_dumps(key), b"null" if raw is None else raw)
            if size > CHUNK_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append(piece)
            size += len(piece)
        count = len(chunks)
        for index, pieces in enumerate(chunks):
            chunk_key = f"{_CHUNK_PREFIX}{sequence}|{index}"
            pending.journal_keys.append(chunk_key)
            raw_chunk = b"[%d,%d,{%s}]" % (sequence, count, b",".join(pieces))
            pending.size += len(raw_chunk)
            out.append((topic, partition, _dumps(prefix + chunk_key), raw_chunk))
        if pending.size >= CHECKPOINT_BYTES:
            self._checkpoint(partition, topic, pending)
        if self._keep_copy:
            data = self._table.data
            for _, _, raw_key, raw_value in out[first:]:
                if raw_value is None:
                    data.pop(_loads(raw_key), None)
                else:
                    data[_loads(raw_key)] = _loads(raw_value)

    def _checkpoint(self, partition: int, topic: str, pending: _Pending) -> None:
        """The changes journaled since the last checkpoint as entries, then their journals
        deleted, in the order they were written (see the module's docstring)."""
        prefix = f"{partition}|"
        out = self.outbox
        for key, raw in pending.changes.items():
            out.append((topic, partition, _dumps(prefix + key), raw))
        for key in pending.journal_keys:
            out.append((topic, partition, _dumps(prefix + key), None))
        self._pending[partition] = _Pending()

    def take_outbox(self) -> list[ChangelogRecord]:
        records, self.outbox = self.outbox, []
        return records
