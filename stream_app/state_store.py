"""Durable per-partition state on a changelog-backed Faust table, written a batch at a time.

A batch's changes are first written as a journal, then as individual entries. Kafka keeps
one partition's records in order, so if the journal of batch n+1 is in the changelog,
every entry of batch n is too; on recovery the entries plus the last complete journal
give exactly the state after the last journaled batch, even if the worker died halfway
through writing a batch. The state carries the input offset it reflects, so the batch
after it is read again and applied once.

A worker can stop after a batch's journal landed and before all of its entries did; the
state is then loaded from that journal. The entries it holds are written again, as
entries, ahead of the next batch's journal, which overwrites it: without them, the
changelog would keep that batch's changes nowhere (an open offer lost, so a conversion,
in the SIGTERM restart test).

The journal is cut into chunks (keys `<partition>|journal|<i>`, each holding the batch's
sequence number, the number of chunks and a part of the changes), so that no message
grows with the batch. A journal whose chunks did not all land is ignored: then none of
its batch's entries were written either (they come after it), and the entries alone are
the state after the batch before. (Older versions wrote one `<partition>|journal` entry;
it is still read.)

The records are encoded here and queued in `outbox`; the hot path produces them straight
to the changelog topic (keys and values JSON, as Faust's own table serializers write and
recovery reads them) on the same producer as the batch's outputs, and flushes it before
committing. Faust's per-message `send_changelog` cost more than the processing itself.
"""

from __future__ import annotations

from typing import Any

from stream_app.core.fastjson import dumps as _dumps

JOURNAL_KEY = "journal"
_CHUNK_PREFIX = f"{JOURNAL_KEY}|"
# Well under Kafka's default 1 MB message limit, and big enough that a chunk's overhead
# (one record) is nothing next to its contents.
CHUNK_BYTES = 256 * 1024

ChangelogRecord = tuple[str, int, bytes, bytes | None]  # topic, partition, key, value


class PartitionStore:
    """`keep_copy=False` (the worker): the table's in-memory data is read once, when a
    partition's state is loaded, and then dropped; the live state is the only copy. That
    halves the memory per open offer. It is sound because Faust's in-memory store has no
    persisted offset: a partition newly assigned to this worker is always recovered by
    replaying its changelog from the start into the data, and a partition kept across a
    rebalance is never loaded again (call `release` after a recovery to drop what it
    replayed for partitions whose state is live). `keep_copy=True` mirrors every write
    into the data, for tests that restart from the same table without a changelog.
    """

    def __init__(self, table: Any, keep_copy: bool = True) -> None:
        self._table = table
        self._keep_copy = keep_copy
        self._sequence: dict[int, int] = {}
        # Per partition: the changes of the journal its state was loaded from, whose
        # entries may not all have landed (written again by the next `write`).
        self._unsettled: dict[int, dict[str, Any]] = {}
        # Encoded changelog records waiting for the hot path to produce them, in order.
        self.outbox: list[ChangelogRecord] = []

    def _topic(self) -> str:
        changelog = getattr(self._table, "changelog_topic", None)
        return "" if changelog is None else str(changelog.get_topic_name())

    def load(self, partition: int) -> dict[str, Any]:
        prefix = f"{partition}|"
        entries = {
            key[len(prefix) :]: value
            for key, value in self._table.data.items()
            if isinstance(key, str) and key.startswith(prefix)
        }
        if not self._keep_copy:
            self.release(partition)
        journal: dict[str, Any] = {}
        legacy = entries.pop(JOURNAL_KEY, None)
        if legacy is not None:
            journal.update(legacy)
        chunks = {int(key[len(_CHUNK_PREFIX) :]): entries.pop(key)
                  for key in [k for k in entries if k.startswith(_CHUNK_PREFIX)]}
        chunks = {index: chunk for index, chunk in chunks.items() if chunk is not None}
        if chunks:
            latest = max(chunk[0] for chunk in chunks.values())
            self._sequence[partition] = max(self._sequence.get(partition, 0), latest)
            count = next(chunk[1] for chunk in chunks.values() if chunk[0] == latest)
            if all(index in chunks and chunks[index][0] == latest for index in range(count)):
                for index in range(count):
                    journal.update(chunks[index][2])
        entries.update(journal)
        unsettled = dict(journal)
        if legacy is not None:
            # Its batch is older than every entry written since: gone with the next write.
            unsettled[JOURNAL_KEY] = None
        self._unsettled.pop(partition, None)
        if unsettled:
            self._unsettled[partition] = unsettled
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
        data = self._table.data if self._keep_copy else None
        sequence = self._sequence[partition] = self._sequence.get(partition, 0) + 1
        prefix = f"{partition}|"
        # Before this batch's journal overwrites the one the state was loaded from.
        for key, value in self._unsettled.pop(partition, {}).items():
            out.append((topic, partition, _dumps(prefix + key),
                        None if value is None else _dumps(value)))
            if data is not None:
                if value is None:
                    data.pop(prefix + key, None)
                else:
                    data[prefix + key] = value
        # The journal's chunks are spliced from the entries' encodings: each value is
        # encoded once. An entry's key inside a chunk is its stored key without the
        # `<partition>|` prefix (digits and a bar: never escaped).
        skip = len(prefix) + 1
        entries: list[ChangelogRecord] = []
        chunks: list[list[bytes]] = [[]]
        size = 0
        for key, value in changes.items():
            stored_key = prefix + key
            encoded_key = _dumps(stored_key)
            if value is None:
                raw = None
                piece = b'"%s:null' % encoded_key[skip:]
                if data is not None:
                    data.pop(stored_key, None)
            else:
                raw = _dumps(value)
                piece = b'"%s:%s' % (encoded_key[skip:], raw)
                if data is not None:
                    data[stored_key] = value
            entries.append((topic, partition, encoded_key, raw))
            if size > CHUNK_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append(piece)
            size += len(piece)
        count = len(chunks)
        for index, pieces in enumerate(chunks):
            chunk_key = f"{prefix}{_CHUNK_PREFIX}{index}"
            raw_chunk = b"[%d,%d,{%s}]" % (sequence, count, b",".join(pieces))
            out.append((topic, partition, _dumps(chunk_key), raw_chunk))
        # The in-memory copy keeps no chunks: it holds complete batches only.
        out.extend(entries)

    def take_outbox(self) -> list[ChangelogRecord]:
        records, self.outbox = self.outbox, []
        return records
