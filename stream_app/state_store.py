"""Durable per-partition state on a changelog-backed Faust table, written a batch at a time.

A batch's changes are first written as one journal entry, then as individual entries.
Kafka keeps one partition's records in order, so if the journal of batch n+1 is in the
changelog, every entry of batch n is too; on recovery the entries plus the last journal
give exactly the state after the last journaled batch, even if the worker died halfway
through writing a batch. The state carries the input offset it reflects, so the batch
after it is read again and applied once.
"""

from __future__ import annotations

from typing import Any

JOURNAL_KEY = "journal"


class PartitionStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def load(self, partition: int) -> dict[str, Any]:
        prefix = f"{partition}|"
        entries = {
            key[len(prefix) :]: value
            for key, value in self._table.data.items()
            if isinstance(key, str) and key.startswith(prefix)
        }
        journal = entries.pop(JOURNAL_KEY, None)
        if journal is not None:
            entries.update(journal)
        return {key: value for key, value in entries.items() if value is not None}

    def write(self, partition: int, changes: dict[str, Any]) -> None:
        """Queue the batch's changes on the producer; the caller flushes before committing."""
        if not changes:
            return
        table, data = self._table, self._table.data
        table.send_changelog(partition, f"{partition}|{JOURNAL_KEY}", changes)
        for key, value in changes.items():
            stored_key = f"{partition}|{key}"
            if value is None:
                table.send_changelog(partition, stored_key, None, value_serializer="raw")
                data.pop(stored_key, None)
            else:
                table.send_changelog(partition, stored_key, value)
                data[stored_key] = value
        data[f"{partition}|{JOURNAL_KEY}"] = changes
