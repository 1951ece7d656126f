"""Durable per-partition state on a changelog-backed Faust table, written a batch at a time.

The changelog holds chunks: records keyed `<partition>|#j|<sequence>|<i>` (a journal: a part
of one batch's changes) or `<partition>|#s|<sequence>|<i>` (a snapshot: a part of the whole
state). A chunk holds its sequence number, its number of chunks and its entries (a store key
and its value, or none to delete the key), at most about CHUNK_BYTES of them: no message
grows with the batch or the state. Values are in the compact binary encoding of
engine/src/packed.rs, keys JSON as Faust's table serializer writes them. Every key is new,
so compaction keeps every chunk until it is deleted.

Each batch's changes are written once, as a journal. Once the journals written since the
last snapshot hold as many bytes as that snapshot (and at least SNAPSHOT_MIN_BYTES), the
whole state is written as a snapshot, and then every chunk written before it is deleted (a
tombstone each). So a changelog holds, after compaction, at most about twice the live state
in a few hundred records, however many keys the state has, and each change is written at
most twice: once in its journal and about once more in a snapshot.

On recovery the state is the newest snapshot whose chunks are all there, then the journals
newer than it whose chunks are all there, in sequence order. That is exact wherever a
worker stopped, since Kafka keeps a partition's records in order:
- in a batch's journal: a chunk is missing, and the batch is ignored (the state carries the
  input offset it reflects, so the batch is read again and applied once);
- in a snapshot: it is incomplete and ignored, and the snapshot and journals before it are
  all there;
- in its tombstones: the snapshot is complete, and whatever is left older than it is ignored.

Older versions wrote JSON: plain entries `<partition>|<key>` with journals
`<partition>|journal|<sequence>|<i>`, before that `<partition>|journal|<i>` (one key per
chunk index, overwritten by each batch), and before that one `<partition>|journal` entry.
Such a state is still read, as the state before any snapshot, and the next write is
followed by a snapshot that replaces it.

The records are encoded here (the customer partitions' values by the compiled core) and
queued in `outbox`; the hot path produces them straight to the changelog topic on the same
producer as the batch's outputs, and flushes it before committing. Faust's per-message
`send_changelog` cost more than the processing itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream_app import _engine
from stream_app.domain.fastjson import dumps as _dumps
from stream_app.domain.fastjson import loads as _loads
from stream_app.stages.messages import PackedEntry, WriteChunks

log = logging.getLogger(__name__)

JOURNAL = "#j|"
SNAPSHOT = "#s|"
# Well under Kafka's default 1 MB message limit, and big enough that a chunk's overhead
# (one record) is nothing next to its contents.
CHUNK_BYTES = 256 * 1024
# Journal bytes after which a snapshot is written even of a smaller state: what a
# recovery replays beyond the snapshot, at most.
SNAPSHOT_MIN_BYTES = 4 * 1024 * 1024
LEGACY_JOURNAL = "journal"
_LEGACY_CHUNK = f"{LEGACY_JOURNAL}|"

ChangelogRecord = tuple[str, int, bytes, bytes | None]  # topic, partition, key, value


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Hand the pages the allocator holds free back to the system (glibc; elsewhere a no-op).

    A snapshot encodes the whole state at once; once it is queued, glibc keeps the pages
    its buffers used, and the worker's resident memory would stay at that high-water mark
    (several hundred bytes per open offer) until the next snapshot reuses them."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# A store entry as written: its key and its encoded value, or None to delete the key.


@dataclass
class _Written:
    """What a partition's changelog holds since its last snapshot."""

    sequence: int = 0
    snapshot_bytes: int = 0
    journal_bytes: int = 0
    # Keys of every chunk (and older entry) to delete once a newer snapshot is written, in
    # the order written.
    keys: list[str] = field(default_factory=list)
    # Whether the next write is followed by a snapshot (the state was in an older format).
    snapshot_due: bool = False
    # The live entries, encoded, when the store writes snapshots from its own copy.
    entries: dict[str, bytes] | None = None


def _decoded(partition: int, key: str, raw: bytes) -> Any:
    try:
        return _loads(raw)
    except ValueError as error:
        # Not written by this service; Faust's own recovery skips such a record too.
        log.warning("changelog entry %d|%s is not JSON, skipped: %s", partition, key, error)
        return None


def _complete(chunks: dict[int, dict[int, bytes]]) -> list[tuple[int, list[bytes]]]:
    """(sequence, chunks in order) of each write whose chunks are all there, in order."""
    whole = []
    for sequence in sorted(chunks):
        parts = chunks[sequence]
        count = _engine.chunk_header(next(iter(parts.values())))[1]
        if all(index in parts for index in range(count)):
            whole.append((sequence, [parts[index] for index in range(count)]))
    return whole


def _legacy_state(partition: int, entries: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The state an older version's entries and journals hold (values decoded), and the
    newest journal sequence among them."""
    entries = {
        key: _decoded(partition, key, value) if isinstance(value, bytes) else value
        for key, value in entries.items()
    }
    journals: list[dict[str, Any]] = []
    single = entries.pop(LEGACY_JOURNAL, None)
    if single is not None:
        journals.append(single)
    # sequence -> chunk index -> (chunk count, changes)
    batches: dict[int, dict[int, tuple[int, dict[str, Any]]]] = {}
    fixed_slots: dict[int, Any] = {}  # one key per chunk index
    for key in [k for k in entries if k.startswith(_LEGACY_CHUNK)]:
        chunk = entries.pop(key)
        parts = key[len(_LEGACY_CHUNK) :].split("|")
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
        if all(index in fixed_slots and fixed_slots[index][0] == latest for index in range(count)):
            journals.extend(fixed_slots[index][2] for index in range(count))
    for sequence in sorted(batches):
        chunks = batches[sequence]
        count = next(iter(chunks.values()))[0]
        latest = max(latest, sequence)
        if count - 1 in chunks:  # else the worker stopped while writing it
            journals.extend(chunks[index][1] for index in sorted(chunks))
    for changes in journals:
        entries.update(changes)
    return {key: value for key, value in entries.items() if value is not None}, latest


class PartitionStore:
    """`keep_copy=False` (the worker): the table's in-memory data is read once, when a
    partition's state is loaded, and then dropped; the live state is the only copy. That
    halves the memory per open offer. It is sound because Faust's in-memory store has no
    persisted offset: a partition newly assigned to this worker is always recovered by
    replaying its changelog from the start into the data, and a partition kept across a
    rebalance is never loaded again (call `release` after a recovery to drop what it
    replayed for partitions whose state is live). `keep_copy=True` mirrors every record
    written into the data, for tests that restart from the same table without a changelog.

    `keeps_entries=True` (the rates board, a small state): the store keeps every live
    entry, encoded, and writes snapshots from that copy. False (the customer partitions):
    every `write_packed` passes the state's own snapshot, and nothing is copied.
    """

    def __init__(self, table: Any, keep_copy: bool = True, keeps_entries: bool = True) -> None:
        self._table = table
        self._keep_copy = keep_copy
        self._keeps_entries = keeps_entries
        self._written: dict[int, _Written] = {}
        # Encoded changelog records waiting for the hot path to produce them, in order.
        self.outbox: list[ChangelogRecord] = []

    def _topic(self) -> str:
        changelog = getattr(self._table, "changelog_topic", None)
        return "" if changelog is None else str(changelog.get_topic_name())

    def load(self, partition: int, decode: bool = True) -> dict[str, Any]:
        """The partition's entries as recovered; `decode=False` leaves the values this
        version wrote encoded (bytes), for the compiled core to read."""
        entries, chunks = self.load_chunks(partition)
        _engine.merge_chunks(entries, chunks)
        if self._keeps_entries:
            self._written[partition].entries = {
                key: value if isinstance(value, bytes) else _engine.pack(value)
                for key, value in entries.items()
            }
        if decode:
            _engine.unpack_values(entries)
        return entries

    def load_chunks(self, partition: int) -> tuple[dict[str, Any], list[bytes]]:
        """The partition's state as recovered, unmerged: an older format's entries
        (decoded), and the chunks to apply to them in order (`load` merges them; the
        compiled partition reads them without a Python object per entry)."""
        prefix = f"{partition}|"
        data = self._table.data
        # One pass over every partition's keys (a restart loads each partition in turn).
        stored = [key for key in data if isinstance(key, str) and key.startswith(prefix)]
        chunks: dict[str, dict[int, dict[int, bytes]]] = {JOURNAL: {}, SNAPSHOT: {}}
        older: dict[str, Any] = {}
        latest = 0
        for key in stored:
            value = data[key]
            short = key[len(prefix) :]
            kind = short[: len(JOURNAL)]
            if kind in chunks and isinstance(value, bytes):
                sequence, index = short[len(kind) :].split("|")
                chunks[kind].setdefault(int(sequence), {})[int(index)] = value
                latest = max(latest, int(sequence))
            else:
                older[short] = value
        if not self._keep_copy:
            for key in stored:
                del data[key]
        snapshots = _complete(chunks[SNAPSHOT])
        before = self._written.get(partition)
        written = self._written[partition] = _Written(keys=[k[len(prefix) :] for k in stored])
        older_state: dict[str, Any] = {}
        snapshot: list[bytes] = []
        after = 0
        if snapshots:
            after, snapshot = snapshots[-1]
            written.snapshot_bytes = sum(len(chunk) for chunk in snapshot)
        elif older:
            older_state, older_latest = _legacy_state(partition, older)
            latest = max(latest, older_latest)
            written.snapshot_due = True
        journals = [
            chunk for s, whole in _complete(chunks[JOURNAL]) if s > after for chunk in whole
        ]
        written.journal_bytes = sum(len(chunk) for chunk in journals)
        # A partition loaded again in this process goes on from the sequence it reached.
        written.sequence = max(0 if before is None else before.sequence, latest)
        return older_state, snapshot + journals

    def release(self, partition: int) -> None:
        """Drop the in-memory copy of a partition's entries (its state is live elsewhere)."""
        if self._keep_copy:
            return
        prefix = f"{partition}|"
        data = self._table.data
        for key in [k for k in data if isinstance(k, str) and k.startswith(prefix)]:
            del data[key]

    def write(self, partition: int, changes: dict[str, Any]) -> None:
        """Queue the batch's changes (None deletes a key); the caller produces and flushes
        them before committing. Only for a store that keeps its entries."""
        self.write_packed(partition, _engine.pack_entries(changes))

    def write_packed(
        self,
        partition: int,
        entries: list[PackedEntry],
        snapshot: WriteChunks | None = None,
    ) -> None:
        """`write` of changes already encoded; `snapshot` gives the whole state as a
        write's chunks when a snapshot is due (required unless the store keeps its
        entries)."""
        kept = self._written_of(partition).entries
        if kept is not None:
            for key, raw in entries:
                if raw is None:
                    kept.pop(key, None)
                else:
                    kept[key] = raw

        def journal(sequence: int, chunk_bytes: int) -> list[bytes]:
            return _engine.pack_chunks(sequence, entries, chunk_bytes) if entries else []

        def whole(sequence: int, chunk_bytes: int) -> list[bytes]:
            if snapshot is not None:
                return snapshot(sequence, chunk_bytes)
            if kept is not None:
                return _engine.pack_chunks(sequence, list(kept.items()), chunk_bytes)
            raise ValueError(f"partition {partition}: a snapshot is due and none was given")

        self.write_chunked(partition, journal, whole)

    def write_chunked(self, partition: int, journal: WriteChunks, snapshot: WriteChunks) -> None:
        """`write_packed` of a state that makes its own records (the compiled customer
        partition: no Python object per entry): `journal` gives the batch's changes as the
        records of one write (none when nothing changed), `snapshot` the whole state's
        when a snapshot is due."""
        written = self._written_of(partition)
        chunks = journal(written.sequence + 1, CHUNK_BYTES)
        if not chunks and not written.snapshot_due:
            return
        first = len(self.outbox)
        if chunks:
            written.sequence += 1
            written.journal_bytes += self._queue(partition, JOURNAL, written, chunks)
        if written.snapshot_due or written.journal_bytes >= max(
            SNAPSHOT_MIN_BYTES, written.snapshot_bytes
        ):
            self._snapshot(partition, written, snapshot)
            release_free_memory()
        if self._keep_copy:
            data = self._table.data
            for _, _, raw_key, raw_value in self.outbox[first:]:
                if raw_value is None:
                    data.pop(_loads(raw_key), None)
                else:
                    data[_loads(raw_key)] = raw_value

    def _written_of(self, partition: int) -> _Written:
        written = self._written.get(partition)
        if written is None:
            written = self._written[partition] = _Written(
                entries={} if self._keeps_entries else None
            )
        return written

    def _queue(self, partition: int, kind: str, written: _Written, chunks: list[bytes]) -> int:
        """Queue one write's chunks; their bytes."""
        topic, prefix, out = self._topic(), f"{partition}|", self.outbox
        for index, chunk in enumerate(chunks):
            key = f"{kind}{written.sequence}|{index}"
            written.keys.append(key)
            out.append((topic, partition, _dumps(prefix + key), chunk))
        return sum(len(chunk) for chunk in chunks)

    def _snapshot(self, partition: int, written: _Written, whole: WriteChunks) -> None:
        """The whole state as a snapshot, then every chunk before it deleted (see the
        module's docstring)."""
        chunks = whole(written.sequence + 1, CHUNK_BYTES)
        written.sequence += 1
        older, written.keys = written.keys, []
        written.snapshot_bytes = self._queue(partition, SNAPSHOT, written, chunks)
        written.journal_bytes = 0
        written.snapshot_due = False
        topic, prefix = self._topic(), f"{partition}|"
        self.outbox.extend((topic, partition, _dumps(prefix + key), None) for key in older)

    def take_outbox(self) -> list[ChangelogRecord]:
        records, self.outbox = self.outbox, []
        return records
