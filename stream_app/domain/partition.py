"""The state of one partition of customers: dedupe, stream time, attribution, counts.

`CustomerPartition.apply` takes the items of the internal topic in log order and keeps
everything the contract counts: totals, the windows of every view, rejected, late and
duplicate events. After a batch, `take_partials` gives the window vectors that changed
(for the rates board) and `take_changes` the store entries to persist, with the input
offset they reflect. Results depend only on the order of the log, never on how it was cut
into batches, so a replay after a crash ends in the same state.

The state and its rules are compiled (engine/src/partition.rs and the modules it uses);
this module is the typed face of the compiled class. The window configuration
(window_config.py), the totals (totals.py), the stored keys (store_keys.py) and the views'
keys (views.py) are modules of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stream_app import _engine
from stream_app.domain.cohorts import Partial, WindowKey
from stream_app.domain.forwarding import Forwarded, encode_forwarded
from stream_app.domain.totals import Totals
from stream_app.domain.views import Key, View
from stream_app.domain.window_config import WindowConfig


class CustomerPartition:
    """One partition of customers, compiled (engine/src/partition.rs): this face keeps the
    typed Python API and hands every call to the compiled state."""

    def __init__(
        self, config: WindowConfig, *, _core: _engine.CustomerPartition | None = None
    ) -> None:
        self.config = config
        self._core = (
            _core if _core is not None else _engine.CustomerPartition(*_config_args(config))
        )

    # -- processing ------------------------------------------------------------------
    def apply(self, item: Forwarded, offset: int) -> None:
        """Apply one item of the internal topic read at `offset`."""
        self._core.apply_raw(encode_forwarded(item), offset)

    def apply_raw(self, value: bytes, offset: int) -> None:
        """Apply one record of the internal topic: its value as encode_forwarded wrote it."""
        self._core.apply_raw(value, offset)

    def apply_records(self, records: Iterable[_engine.Record]) -> None:
        """Apply fetched records of the internal topic in order (one call per batch);
        records without a value are skipped."""
        self._core.apply_records(records)

    def apply_handed(
        self, values: list[tuple[str, int, int, int | None, _engine.Accepted] | bytes]
    ) -> None:
        """Apply items the validating stage hands over in process (stages/handoff.py),
        in order: an accepted event as (source topic, partition, offset, stamp, Accepted),
        or another item as encode_forwarded writes it. They have no offset of the internal
        topic, and count once by their source offsets."""
        self._core.apply_handed(values)

    @property
    def stream_time(self) -> int | None:
        return self._core.stream_time

    @property
    def next_offset(self) -> int:
        return self._core.next_offset

    @property
    def totals(self) -> Totals:
        """A snapshot of the totals (counters since the start of the stream)."""
        return Totals.from_row(self._core.totals_row())

    # -- reading ---------------------------------------------------------------------
    def window_vectors(self, view: View, window: WindowKey) -> dict[Key, list[int]]:
        return self._core.window_vectors(view.name, window)

    def windows(self) -> list[tuple[str, WindowKey]]:
        """(view name, window) of every window held."""
        return self._core.windows()

    def open_offers(self) -> int:
        return self._core.open_offers()

    def admitted_labels(self, dimension: str) -> frozenset[str]:
        return self._core.admitted_labels(dimension)

    # -- after a batch ---------------------------------------------------------------
    def take_partials(self) -> list[Partial]:
        return self._core.take_partials()

    def take_partials_encoded(self, partition: int, per_message: int) -> list[bytes]:
        """`take_partials` as the partials topic's messages of this partition, in the
        format of board.encode_partials, at most `per_message` partials each (one message
        at least); only the last carries the stream time."""
        return self._core.take_partials_encoded(partition, per_message)

    def take_changes(self) -> dict[str, Any]:
        """Store entries changed since the last call (None deletes), and forget expired state."""
        return self._core.take_changes()

    def take_packed_changes(self) -> list[tuple[str, bytes | None]]:
        """`take_changes` as store records: (key, value in the compact encoding of
        stream_app/state_store.py, or None to delete the key)."""
        return self._core.take_packed_changes()

    def packed_snapshot(self) -> list[tuple[str, bytes | None]]:
        """Every store entry of the state, encoded as `take_packed_changes` encodes them
        (changes not taken yet are taken with it)."""
        return self._core.packed_snapshot()

    def take_changes_chunks(self, sequence: int, chunk_bytes: int) -> list[bytes]:
        """`take_packed_changes` as the state store's records of write `sequence`
        (`_engine.pack_chunks`, records of about `chunk_bytes`), none when nothing changed."""
        return self._core.take_changes_chunks(sequence, chunk_bytes)

    def snapshot_chunks(self, sequence: int, chunk_bytes: int) -> list[bytes]:
        """`packed_snapshot` as the store's chunks of write `sequence`, encoded straight
        into them: no list of the entries is made, which would cost more than the state
        itself for a moment."""
        return self._core.snapshot_chunks(sequence, chunk_bytes)

    # -- restore ---------------------------------------------------------------------
    @classmethod
    def restore(cls, config: WindowConfig, entries: dict[str, Any]) -> CustomerPartition:
        """Rebuild from the store entries that `take_changes` wrote; a value may be bytes,
        as `take_packed_changes` encoded it."""
        return cls(config, _core=_engine.CustomerPartition.restore(*_config_args(config), entries))

    @classmethod
    def restore_chunks(
        cls, config: WindowConfig, older: dict[str, Any], chunks: list[bytes]
    ) -> CustomerPartition:
        """Rebuild from what `PartitionStore.load_chunks` read: an older format's entries
        (decoded), then the store's chunks applied in order."""
        core = _engine.CustomerPartition.restore_chunks(*_config_args(config), older, chunks)
        return cls(config, _core=core)


def _config_args(config: WindowConfig) -> tuple[list[tuple[str, int]], int, int, int]:
    return list(config.sizes), config.attribution_ms, config.grace_ms, config.max_label_values
