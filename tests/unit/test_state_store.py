"""PartitionStore: what a worker that stops anywhere in a batch's changelog records loads
when it starts again, alone and under a customer partition fed the simulator's stream."""

from __future__ import annotations

import json
import random
import zlib
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream_app import _engine
from stream_app.domain.forwarding import decode_forwarded
from stream_app.domain.partition import CustomerPartition
from stream_app.pipeline import Pipeline
from stream_app.runtime import state_store
from stream_app.runtime.state_store import ChangelogRecord, PartitionStore
from stream_app.settings import Settings
from stream_app.tools.simulator.scenario import ScenarioConfig, Simulation
from tests.unit.conftest import canonical_store
from tests.unit.test_pipeline_drops import FakeRecord, FakeTable

Changes = dict[str, Any]
PARTITIONS = 6


class Changelog:
    """A changelog partition as Faust's table holds it after a recovery: the latest value
    of each key that landed (a tombstone removes the key)."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {}

    def land(self, records: list[ChangelogRecord]) -> None:
        for _, _, key, value in records:
            if value is None:
                self.latest.pop(json.loads(key), None)
            else:
                # Kept encoded, as the batch recovery keeps it (stream_app/recovery.py).
                self.latest[json.loads(key)] = value

    def restart(self, keeps_entries: bool = True) -> PartitionStore:
        """A new worker's store, recovered from what landed."""
        table = FakeTable()
        table.data = dict(self.latest)
        return PartitionStore(table, keep_copy=False, keeps_entries=keeps_entries)


def _applied(state: Changes, changes: Changes) -> Changes:
    after = dict(state)
    for key, value in changes.items():
        if value is None:
            after.pop(key, None)
        else:
            after[key] = value
    return after


def _journal_end(records: list[ChangelogRecord]) -> int:
    """How many of a write's records must land for its whole journal to be there."""
    chunks = [
        i for i, (_, _, key, value) in enumerate(records) if b"|#j|" in key and value is not None
    ]
    return chunks[-1] + 1 if chunks else 0


batch_changes = st.dictionaries(
    st.sampled_from("abcdefgh"), st.one_of(st.none(), st.integers(0, 9)), max_size=6
)
# None: every record of the write lands; a fraction: the worker stops after that share.
stop_after = st.one_of(st.none(), st.floats(0, 1))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(batch_changes, stop_after), min_size=1, max_size=10))
@example([({"a": 1}, None), ({"b": 2, "c": 3}, 0.5), ({"d": 4}, None), ({}, 0.0)])
def test_a_restart_loads_the_state_after_the_last_batch_whose_journal_landed(
    batches: list[tuple[Changes, float | None]],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        # Small chunks, so that journals of several chunks land in part.
        patch.setattr(state_store, "CHUNK_BYTES", 12)
        # And snapshots every few batches, so that a worker stops within them too.
        patch.setattr(state_store, "SNAPSHOT_MIN_BYTES", 60)
        _write_and_stop(batches)


def _write_and_stop(batches: list[tuple[Changes, float | None]]) -> None:
    changelog = Changelog()
    store = PartitionStore(FakeTable(), keep_copy=False)
    live: Changes = {}
    durable: Changes = {}
    for changes, stop in batches:
        after = _applied(live, changes)
        store.write(0, changes)
        records = store.take_outbox()
        landed = len(records) if stop is None else int(stop * len(records))
        changelog.land(records[:landed])
        if landed >= _journal_end(records):
            durable = after
        if stop is None:
            live = after
            continue
        store = changelog.restart()
        live = store.load(0)
        assert live == durable


def test_the_journals_loaded_stay_until_a_snapshot_holds_their_changes() -> None:
    """A worker stopped after a batch's journal and part of what followed it: the state
    loaded holds that batch, and so does every later restart (the SIGTERM restart test
    once lost an open offer this way)."""
    changelog = Changelog()
    store = PartitionStore(FakeTable(), keep_copy=False)
    store.write(0, {"a": 1})
    changelog.land(store.take_outbox())
    store.write(0, {"b": 2, "c": 3})
    records = store.take_outbox()
    changelog.land(records[: _journal_end(records) + 1])  # the journal and entry b
    store = changelog.restart()
    assert store.load(0) == {"a": 1, "b": 2, "c": 3}
    store.write(0, {"d": 4})
    changelog.land(store.take_outbox())
    assert changelog.restart().load(0) == {"a": 1, "b": 2, "c": 3, "d": 4}


@pytest.mark.parametrize(
    "older",
    [
        # Entries with journals of several chunks (the batch of sequence 5 left only its
        # first chunk: it is ignored).
        {
            "0|a": 1,
            "0|b": 3,
            "0|journal|4|0": [4, 2, {"a": 2}],
            "0|journal|4|1": [4, 2, {"c": None}],
            "0|journal|5|0": [5, 2, {"a": 9}],
        },
        # One journal entry per partition, before chunks.
        {"0|a": 1, "0|journal": {"a": 2, "b": 3}},
        # Chunks keyed by their index alone, overwritten by each batch, and every entry
        # written again (the batch of sequence 4 left only its first chunk: it is ignored).
        {"0|a": 2, "0|b": 3, "0|journal|0": [4, 2, {"a": 9}], "0|journal|1": [3, 2, {"b": 3}]},
        {"0|a": 1, "0|journal|0": [3, 2, {"a": 2}], "0|journal|1": [3, 2, {"b": 3}]},
    ],
)
def test_a_state_in_the_older_json_format_loads_and_the_next_write_replaces_it(
    older: dict[str, Any],
) -> None:
    changelog = Changelog()
    # As recovered: JSON text, as the older versions wrote it.
    changelog.latest = {key: json.dumps(value).encode() for key, value in older.items()}
    store = changelog.restart()
    assert store.load(0) == {"a": 2, "b": 3}
    store.write(0, {"a": 4})
    records = store.take_outbox()
    changelog.land(records[:1])  # the journal only
    assert changelog.restart().load(0) == {"a": 4, "b": 3}
    changelog.land(records[1:])
    # A snapshot, and every older record deleted.
    assert all(key.startswith("0|#s|") for key in changelog.latest)
    assert changelog.restart().load(0) == {"a": 4, "b": 3}


def test_a_snapshot_leaves_the_live_state_in_a_few_records() -> None:
    """The changelog holds each batch's changes once, as a journal, until a snapshot of the
    whole state is written and every record before it deleted."""
    changelog = Changelog()
    store = PartitionStore(FakeTable(), keep_copy=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_store, "SNAPSHOT_MIN_BYTES", 200)
        snapshots = 0
        for value in range(40):
            store.write(0, {"cell": [value] * 3, f"offer{value}": value, "gone": None})
            records = store.take_outbox()
            snapshots += sum(1 for _, _, key, _ in records if b"|#s|" in key)
            changelog.land(records)
    state = {"cell": [39] * 3, **{f"offer{value}": value for value in range(40)}}
    assert changelog.restart().load(0) == state
    # A snapshot when the journals since the last one hold as many bytes as it does.
    assert 2 <= snapshots < 20
    assert len(changelog.latest) < 20


def test_every_batch_is_journaled_once_in_the_compact_encoding() -> None:
    store = PartitionStore(FakeTable(), keep_copy=False)
    store.write(0, {"a": 1, "b": [2, "x"], "c": None})
    records = store.take_outbox()
    assert [json.loads(key) for _, _, key, _ in records] == ["0|#j|1|0"]
    chunk = records[0][3] or b""
    assert _engine.chunk_header(chunk) == (1, 1)
    entries: dict[str, Any] = {"c": b"gone"}
    _engine.merge_chunks(entries, [chunk])
    assert entries == {"a": _engine.pack(1), "b": _engine.pack([2, "x"])}


def _customer_logs(offers: int) -> tuple[Pipeline, dict[int, list[FakeRecord]]]:
    """The simulator's stream through the validating stage: the records of each partition
    of customers (grace 1 h, as the SIGTERM restart test runs)."""
    settings = Settings.from_env({"UPSELL_GRACE": "1h", "UPSELL_PARTITIONS": str(PARTITIONS)})
    config = ScenarioConfig(
        offers=offers,
        customers=400,
        seed=11,
        settle_ms=settings.grace_ms,
        offers_topic=settings.topic_offers,
        purchases_topic=settings.topic_purchases,
    )
    inputs: dict[tuple[str, int], list[FakeRecord]] = defaultdict(list)
    for message in Simulation(config):
        topic = (
            settings.topic_offers if message.topic_kind == "offers" else settings.topic_purchases
        )
        records = inputs[(topic, _partition_of(message.key))]
        records.append(FakeRecord(len(records), message.key, message.value))
    pipeline = Pipeline(settings, PartitionStore(FakeTable()), PartitionStore(FakeTable()))
    logs: dict[int, list[FakeRecord]] = defaultdict(list)
    longest = max(len(records) for records in inputs.values())
    for start in range(0, longest, 300):
        for output in pipeline.validate(
            {source: records[start : start + 300] for source, records in inputs.items()}
        ):
            if output.topic == settings.topic_events:
                partition = (
                    output.partition if output.partition is not None else _partition_of(output.key)
                )
                log = logs[partition]
                log.append(FakeRecord(len(log), output.key, output.value))
    return pipeline, logs


def _apply(state: CustomerPartition, record: FakeRecord) -> None:
    assert record.value is not None
    state.apply(decode_forwarded(record.value), record.offset)


def _partition_of(key: bytes | None) -> int:
    # Any fixed map from customer to partition does (a malformed message may have no key).
    return 0 if key is None else zlib.crc32(key) % PARTITIONS


@pytest.mark.parametrize(
    ("seed", "snapshot_bytes"), [(1, 4 * 1024 * 1024), (2, 30_000), (3, 5_000)]
)
def test_a_partition_stopped_anywhere_in_its_changelog_ends_as_one_never_stopped(
    seed: int, snapshot_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_store, "SNAPSHOT_MIN_BYTES", snapshot_bytes)
    monkeypatch.setattr(state_store, "CHUNK_BYTES", 4_000)
    pipeline, logs = _customer_logs(offers=1_500)
    rng = random.Random(seed)
    for partition, log in logs.items():
        never_stopped = CustomerPartition(pipeline.config)
        for record in log:
            _apply(never_stopped, record)
        changelog = Changelog()
        store = PartitionStore(FakeTable(), keep_copy=False, keeps_entries=False)
        state = CustomerPartition(pipeline.config)
        while state.next_offset < len(log):
            for record in log[state.next_offset : state.next_offset + rng.randint(1, 800)]:
                _apply(state, record)
            store.write_packed(partition, state.take_packed_changes(), state.snapshot_chunks)
            records = store.take_outbox()
            if rng.random() < 0.7:
                changelog.land(records)
                continue
            changelog.land(records[: rng.randint(0, len(records))])
            store = changelog.restart(keeps_entries=False)
            older, chunks = store.load_chunks(partition)
            state = CustomerPartition.restore_chunks(pipeline.config, older, chunks)
        assert state.totals.as_row() == never_stopped.totals.as_row(), partition
        # And the whole state the changelog holds: open offers, remembered ids, windows.
        store.write_packed(partition, state.take_packed_changes(), state.snapshot_chunks)
        changelog.land(store.take_outbox())
        expected = {
            key: value for key, value in never_stopped.take_changes().items() if value is not None
        }
        assert canonical_store(changelog.restart().load(partition)) == canonical_store(
            json.loads(json.dumps(expected))
        )
