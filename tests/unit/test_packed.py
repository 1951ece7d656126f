"""The compact binary encoding of stored state (engine/src/packed.rs): values come back
exactly, a partition's snapshot restates what its changes wrote, and a state written by
the older JSON format restores to the same partition as one written now."""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app import _engine
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.window_config import WindowConfig
from stream_app.runtime import state_store
from stream_app.runtime.state_store import PartitionStore
from stream_app.stages.messages import WriteChunks
from tests.unit.conftest import CONFIG, Feed, canonical_store, merge_store, snapshot
from tests.unit.test_core_partition import SHORT, TIGHT, operations, play
from tests.unit.test_pipeline_drops import FakeTable

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),  # lone surrogates too
    st.binary(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(values)
def test_a_value_comes_back_exactly(value: Any) -> None:
    raw = _engine.pack(value)
    assert raw[0] >= 0xC0  # never the first byte of JSON text
    back = _engine.unpack(raw)
    assert back == value
    assert repr(back) == repr(value)  # types too: True is not 1, 1.0 is not 1


def test_tuples_come_back_as_lists_as_json_makes_them() -> None:
    assert _engine.unpack(_engine.pack(("a", (1, None)))) == ["a", [1, None]]


@given(values)
def test_a_cut_or_foreign_value_is_a_clear_error(value: Any) -> None:
    raw = _engine.pack([value, 1])
    with pytest.raises(ValueError, match="stored value"):
        _engine.unpack(raw[:-1])
    with pytest.raises(ValueError, match="stored value"):
        _engine.unpack(raw + b"\x00")
    with pytest.raises(ValueError, match="stored value"):
        _engine.unpack(json.dumps(value, default=str).encode() or b"null")


def test_what_cannot_be_stored_is_named() -> None:
    with pytest.raises(ValueError, match="cannot store a set"):
        _engine.pack({"a": {1}})


def _restored(config: WindowConfig, entries: dict[str, Any]) -> CustomerPartition:
    return CustomerPartition.restore(config, copy.deepcopy(entries))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), ops=operations(), config=st.sampled_from([SHORT, TIGHT, CONFIG]))
def test_a_snapshot_holds_what_the_changes_wrote_and_the_older_format_restores_the_same(
    data: st.DataObject, ops: list[tuple[Any, ...]], config: WindowConfig
) -> None:
    cuts = data.draw(st.sets(st.integers(0, max(0, len(ops) - 1))), label="cuts")
    feed = Feed(CustomerPartition(config))
    merged: dict[str, Any] = {}  # what the changes wrote, decoded
    for i, op in enumerate(ops):
        play(feed, op)
        if i in cuts:
            changes = feed.partition.take_packed_changes()
            merge_store(merged, {k: None if v is None else _engine.unpack(v) for k, v in changes})
    merge_store(merged, feed.partition.take_changes())
    whole = dict(feed.partition.packed_snapshot())
    decoded = {key: _engine.unpack(value) for key, value in whole.items() if value is not None}
    assert len(decoded) == len(whole)
    assert canonical_store(decoded) == canonical_store(json.loads(json.dumps(merged)))
    assert feed.partition.take_packed_changes() == [("m", whole["m"])]  # nothing left to write
    expected = snapshot(feed.partition)
    assert snapshot(_restored(config, whole)) == expected
    # From the store's chunks: the snapshot, and the same after a journal of nothing new.
    store = PartitionStore(FakeTable(), keep_copy=True, keeps_entries=False)
    store.write_packed(0, list(whole.items()), lambda sequence, size: [])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_store, "SNAPSHOT_MIN_BYTES", 0)  # a snapshot after this write
        store.write_packed(0, [("m", whole["m"])], feed.partition.snapshot_chunks)
    assert any(b"|#s|" in key for _, _, key, _ in store.take_outbox())
    # The older format: each entry JSON, as a worker of that version wrote and recovered it.
    table = FakeTable()
    table.data = {f"0|{key}": json.dumps(value).encode() for key, value in merged.items()}
    for restored in (
        CustomerPartition.restore_chunks(config, *store.load_chunks(0)),
        CustomerPartition.restore_chunks(config, *PartitionStore(table).load_chunks(0)),
        _restored(config, PartitionStore(table).load(0, decode=False)),
    ):
        assert snapshot(restored) == expected
        assert restored.open_offers() == feed.partition.open_offers()
        assert restored.next_offset == feed.partition.next_offset


@settings(max_examples=40, deadline=None)
@given(data=st.data(), ops=operations(), config=st.sampled_from([SHORT, TIGHT, CONFIG]))
def test_the_records_the_core_encodes_are_the_ones_the_store_encodes_from_its_entries(
    data: st.DataObject, ops: list[tuple[Any, ...]], config: WindowConfig
) -> None:
    """`write_chunked` of the partition's own records (the attributing stage's way) leaves
    the changelog exactly as `write_packed` of its entries, journals and snapshots alike,
    and the state restores from it."""
    cuts = data.draw(st.sets(st.integers(0, max(0, len(ops) - 1))), label="cuts")
    by_entries, by_chunks = Feed(CustomerPartition(config)), Feed(CustomerPartition(config))
    entries_store = PartitionStore(FakeTable(), keep_copy=True, keeps_entries=False)
    chunks_store = PartitionStore(FakeTable(), keep_copy=True, keeps_entries=False)
    with pytest.MonkeyPatch.context() as patch:
        # A snapshot after nearly every write, as a long-lived partition makes them.
        patch.setattr(state_store, "SNAPSHOT_MIN_BYTES", 0)
        for i, op in enumerate(ops):
            play(by_entries, op)
            play(by_chunks, op)
            if i in cuts or i == len(ops) - 1:
                state = by_entries.partition
                entries_store.write_packed(
                    0, state.take_packed_changes(), packed_snapshot_chunks(state)
                )
                state = by_chunks.partition
                chunks_store.write_chunked(0, state.take_changes_chunks, state.snapshot_chunks)
    written = chunks_store.take_outbox()
    # Two partitions may hold their entries in different orders: each chunk is compared
    # by what it holds.
    assert [_held(record) for record in written] == [
        _held(record) for record in entries_store.take_outbox()
    ]
    assert any(b"|#s|" in key for _, _, key, _ in written)
    restored = CustomerPartition.restore_chunks(config, *chunks_store.load_chunks(0))
    assert snapshot(restored) == snapshot(by_chunks.partition)


@settings(max_examples=15, deadline=None)
@given(histories=st.lists(operations(), min_size=4, max_size=4))
def test_partitions_restored_side_by_side_on_threads_equal_them_restored_one_by_one(
    histories: list[list[tuple[Any, ...]]],
) -> None:
    """The engine decodes the chunks without the GIL, so that a worker loads its
    partitions on all its cores at once (stream_app/runtime/faust_app.py)."""
    written: list[tuple[PartitionStore, Any]] = []
    for history in histories:
        feed = Feed(CustomerPartition(CONFIG))
        for op in history:
            play(feed, op)
        store = PartitionStore(FakeTable(), keep_copy=True, keeps_entries=False)
        state = feed.partition
        store.write_chunked(0, state.take_changes_chunks, state.snapshot_chunks)
        written.append((store, snapshot(state)))

    def restore(store: PartitionStore) -> CustomerPartition:
        return CustomerPartition.restore_chunks(CONFIG, *store.load_chunks(0))

    with ThreadPoolExecutor(max_workers=len(written)) as loaders:
        restored = list(loaders.map(restore, [store for store, _ in written]))
    assert [snapshot(state) for state in restored] == [expected for _, expected in written]


def packed_snapshot_chunks(state: CustomerPartition) -> WriteChunks:
    """The snapshot as the store packs a list of entries, beside the core's own chunks."""
    return lambda sequence, chunk_bytes: _engine.pack_chunks(
        sequence, state.packed_snapshot(), chunk_bytes
    )


def _held(record: state_store.ChangelogRecord) -> tuple[bytes, Any]:
    """A changelog record's key and, for a chunk, its header and entries."""
    _, _, key, value = record
    if value is None:
        return key, None
    sequence, count, flat = _engine.unpack(value)
    return key, (sequence, count, dict(zip(flat[::2], flat[1::2], strict=True)))
