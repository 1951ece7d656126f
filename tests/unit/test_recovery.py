"""Changelog recovery a batch at a time (stream_app/runtime/recovery.py) on Faust's own Recovery
and in-memory tables, no broker: the tables end exactly as Faust's per-record path leaves
them, and nothing is left to recover once every active partition is read."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from itertools import count
from typing import Any

import faust
import pytest
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.fastjson import dumps, loads
from stream_app.runtime.recovery import apply_changelog_batch
from stream_app.runtime.state_store import PartitionStore

_apps = count()


@dataclass(frozen=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None


def recovering(partitions: int = 2) -> tuple[Any, Any, list[TP]]:
    """A recovery with every partition of a table active, from the changelog's start."""
    app = faust.App(
        f"recovery-test-{next(_apps)}",
        broker="kafka://127.0.0.1:1",
        store="memory://",
        autodiscover=False,
    )
    table = app.Table("state", partitions=partitions, default=None)
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    tps = [TP(table.changelog_topic.get_topic_name(), p) for p in range(partitions)]
    for tp in tps:
        recovery.add_active(table, tp)
        recovery.active_offsets[tp] = -1
    return recovery, table, tps


@dataclass(frozen=True)
class _Message:
    value: bytes | None
    partition: int


@dataclass(frozen=True)
class _Event:
    """What Faust's memory store reads of a changelog event."""

    key: Any
    value: Any
    message: _Message


def faust_applies(records: list[Record], partition: int) -> tuple[dict[Any, Any], dict[Any, int]]:
    """The table after Faust's own path: records newer than the last one read, decoded by
    the topic's JSON schema, through the memory store's apply_changelog_batch."""
    _, table, _ = recovering()
    seen = -1
    events = []
    for record in records:
        if record.offset <= seen:
            continue
        seen = record.offset
        value = None if record.value is None else json.loads(record.value)
        events.append(
            _Event(json.loads(record.key or b""), value, _Message(record.value, partition))
        )
    table.data.apply_changelog_batch(events, to_key=table._to_key, to_value=table._to_value)
    return dict(table.data.data), dict(table.data._key_partition)


keys = st.sampled_from([f"1|k{n}" for n in range(6)])
# Stored values are never falsy (Faust's store deletes a falsy value a batch also deletes).
values = (
    st.none()
    | st.lists(st.integers(-(2**70), 2**70), min_size=1, max_size=3)
    | st.text(min_size=1, max_size=5)
)


@st.composite
def fetches(draw: st.DrawFn) -> tuple[list[Record], list[list[Record]]]:
    """A changelog (offsets with gaps, as compaction leaves them) and the batches fetched
    from it: cut anywhere, some read again from an earlier record (a seek), and maybe an
    old batch again at the end."""
    offsets = sorted(draw(st.sets(st.integers(0, 200), min_size=1, max_size=40)))
    records = [
        Record(offset, dumps(draw(keys)), None if (v := draw(values)) is None else dumps(v))
        for offset in offsets
    ]
    batches = []
    start = 0
    while start < len(records):
        start = draw(st.integers(0, start))  # read again from there, or go on
        end = draw(st.integers(start + 1, len(records)))
        batches.append(records[start:end])
        start = end
    if draw(st.booleans()):  # records fetched before the last seek, delivered after it
        start = draw(st.integers(0, len(records) - 1))
        batches.append(records[start : draw(st.integers(start + 1, len(records)))])
    return records, batches


@settings(max_examples=200, deadline=None)
@given(fetches())
def test_batches_leave_the_table_as_faust_record_by_record(
    fetch: tuple[list[Record], list[list[Record]]],
) -> None:
    records, batches = fetch
    recovery, table, tps = recovering()
    for batch in batches:
        assert apply_changelog_batch(recovery, tps[1], batch)
    data, key_partition = faust_applies(records, 1)
    # Values stay encoded until the state is loaded.
    assert {key: loads(value) for key, value in table.data.data.items()} == data
    assert dict(table.data._key_partition) == key_partition
    assert recovery.active_offsets[tps[1]] == records[-1].offset


def test_nothing_left_to_recover_once_every_active_partition_is_read() -> None:
    """What Faust's recovery loop checks, on the record handed to it after each batch."""
    recovery, _, tps = recovering()
    recovery.active_highwaters.update({tps[0]: 4, tps[1]: 2})
    entry = dumps("0|a")
    apply_changelog_batch(recovery, tps[0], [Record(n, entry, b"1") for n in range(5)])
    apply_changelog_batch(recovery, tps[1], [Record(0, entry, b"1"), Record(1, entry, None)])
    assert recovery.need_recovery()
    apply_changelog_batch(recovery, tps[1], [Record(2, dumps("1|a"), b"2")])
    assert not recovery.need_recovery()


def test_integers_beyond_64_bits_come_back_exact() -> None:
    recovery, table, tps = recovering()
    amount = 999_999_999_999_999_123_457
    apply_changelog_batch(recovery, tps[0], [Record(0, dumps("0|m"), dumps([amount, 1]))])
    assert PartitionStore(table).load(0) == {"m": [amount, 1]}


def test_a_record_not_json_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    recovery, table, tps = recovering()
    with caplog.at_level(logging.WARNING):
        apply_changelog_batch(
            recovery,
            tps[0],
            [
                Record(0, b"not json", b"1"),
                Record(1, None, b"1"),
                Record(2, dumps("0|a"), b"{"),
                Record(3, dumps("0|b"), b"[2]"),
            ],
        )
        assert recovery.active_offsets[tps[0]] == 3
        assert len(caplog.records) == 2
        # A value that is not JSON is found when the state is loaded.
        assert PartitionStore(table).load(0) == {"b": [2]}
    assert len(caplog.records) == 3 and "0|a" in caplog.records[2].getMessage()


def test_anything_else_is_left_to_faust() -> None:
    recovery, table, tps = recovering()
    entry = [Record(0, dumps("0|a"), b"1")]
    assert not apply_changelog_batch(recovery, TP("other", 0), entry)  # not an active one

    async def hook(event: Any) -> None: ...

    table._on_changelog_event = hook
    assert not apply_changelog_batch(recovery, tps[1], entry)
    assert not table.data.data
