"""A rebalance and the pipeline's live state, without Kafka.

Faust's eager rebalance revokes every partition and then assigns the new set; for a kept
partition its recovery reads the changelog only from where the last recovery ended, so
the table holds the entries written since, not the state. A kept partition must keep its
live state; one that moved away is dropped, and reloaded from a full recovery if it
comes back.
"""

from __future__ import annotations

import json
import logging

import pytest

from stream_app.domain.forwarding import Forwarded, decode_forwarded, encode_forwarded
from stream_app.domain.totals import CONVERSIONS_TOTAL
from stream_app.pipeline import Pipeline
from stream_app.runtime.state_store import PartitionStore
from stream_app.settings import Settings
from stream_app.stages.messages import Output
from tests.unit.conftest import offer, purchase
from tests.unit.test_pipeline_drops import FakeRecord, FakeTable

T0 = 1_795_305_600_000  # 2026-11-22T00:00:00Z
SETTINGS = Settings(partitions=2)
EVENTS = SETTINGS.topic_events
OFFERS = SETTINGS.topic_offers


def forwarded(offset: int, event: object) -> FakeRecord:
    item = Forwarded(OFFERS, 0, offset, None, event)  # type: ignore[arg-type]
    return FakeRecord(offset, None, encode_forwarded(item))


def worker() -> tuple[Pipeline, FakeTable]:
    table = FakeTable()
    pipeline = Pipeline(
        SETTINGS,
        PartitionStore(table, keep_copy=False),
        PartitionStore(FakeTable(), keep_copy=False),
    )
    pipeline.attribute(0, [forwarded(0, offer("o1", "alice", T0, offer_id="A"))])
    pipeline.attributing.persist(0)
    # What a recovery would have replayed is released once the state is live.
    table.data.clear()
    return pipeline, table


def test_a_partition_kept_across_a_rebalance_keeps_its_open_offers() -> None:
    pipeline, _ = worker()
    every = [(EVENTS, 0), (EVENTS, 1), (OFFERS, 0)]
    pipeline.forget_waiting_inputs(every)  # eager: everything is revoked first
    pipeline.keep_only(every)
    pipeline.load(EVENTS, 0)
    # The purchase naming the offer, after the rebalance: it converts.
    pipeline.attribute(0, [forwarded(1, purchase("p1", "alice", T0 + 1_000, offer_id="A"))])
    state = pipeline.partitions[0]
    assert state.open_offers() == 1
    assert sum(state.totals[CONVERSIONS_TOTAL].values()) == 1


def test_a_partition_assigned_elsewhere_is_dropped() -> None:
    pipeline, _ = worker()
    pipeline.forget_waiting_inputs([(EVENTS, 0), (OFFERS, 0)])
    pipeline.keep_only([(EVENTS, 1)])
    assert 0 not in pipeline.partitions


def test_state_counts_as_there_from_its_load_until_its_partition_moves_away() -> None:
    # The hot path reads records of a partition only while this says its state is there.
    pipeline = Pipeline(
        SETTINGS,
        PartitionStore(FakeTable(), keep_copy=False),
        PartitionStore(FakeTable(), keep_copy=False),
    )
    partials = SETTINGS.topic_partials
    assert not pipeline.has_state(EVENTS, 1) and not pipeline.has_state(partials, 0)
    pipeline.load(EVENTS, 1)
    pipeline.load(partials, 0)
    assert pipeline.has_state(EVENTS, 1) and pipeline.has_state(partials, 0)
    assert not pipeline.has_state(EVENTS, 0) and not pipeline.has_state(OFFERS, 1)
    pipeline.keep_only([(partials, 0)])
    assert not pipeline.has_state(EVENTS, 1) and pipeline.has_state(partials, 0)


def offer_record(offset: int) -> FakeRecord:
    value = {
        "event_id": f"e{offset}",
        "offer_id": f"o{offset}",
        "customer_id": "c1",
        "channel": "email",
        "segment": "smb",
        "ts": T0 + offset,
    }
    return FakeRecord(offset, b"c1", json.dumps(value).encode())


def forwarded_offsets(outputs: list[Output]) -> list[int]:
    return [
        decode_forwarded(o.value).source_offset
        for o in outputs
        if o.topic == EVENTS and o.value is not None and not decode_forwarded(o.value).is_tick
    ]


def test_a_batch_fetched_before_a_rebalance_is_read_again_from_what_was_held() -> None:
    pipeline = Pipeline(
        SETTINGS,
        PartitionStore(FakeTable(), keep_copy=False),
        PartitionStore(FakeTable(), keep_copy=False),
    )
    source = (OFFERS, 0)
    purchases = (SETTINGS.topic_purchases, 0)
    sent = forwarded_offsets(pipeline.validate({source: [offer_record(0)]}))
    # Held: the purchases partition is behind.
    sent += forwarded_offsets(
        pipeline.validate(
            {source: [offer_record(1), offer_record(2)]},
            behind={source: False, purchases: True},
            now=0.0,
        )
    )
    assert sent == [0]
    pipeline.forget_waiting_inputs([source, purchases])
    pipeline.keep_only([source, purchases])
    assert pipeline.input_positions() == {source: 1}
    # Offsets 3-4, fetched before the rebalance, would skip the dropped 1-2.
    assert pipeline.validate({source: [offer_record(3), offer_record(4)]}) == []
    assert pipeline.take_rewinds() == {source: 1}
    sent += forwarded_offsets(pipeline.validate({source: [offer_record(o) for o in range(5)]}))
    assert sent == [0, 1, 2, 3, 4]
    assert pipeline.input_positions() == {source: 5}


def test_an_input_partition_owned_elsewhere_is_forgotten() -> None:
    pipeline = Pipeline(
        SETTINGS,
        PartitionStore(FakeTable(), keep_copy=False),
        PartitionStore(FakeTable(), keep_copy=False),
    )
    pipeline.validate({(OFFERS, 0): [offer_record(0)], (OFFERS, 1): [offer_record(0)]})
    pipeline.forget_waiting_inputs([(OFFERS, 0), (OFFERS, 1)])
    pipeline.keep_only([(OFFERS, 1)])
    assert pipeline.input_positions() == {(OFFERS, 1): 1}


def test_records_waiting_long_for_a_partition_whose_lag_is_unknown_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A partition no fetch has told the lag of holds the others back (its records may be
    hours older); when that lasts, operators are told, once."""
    pipeline = Pipeline(
        SETTINGS,
        PartitionStore(FakeTable(), keep_copy=False),
        PartitionStore(FakeTable(), keep_copy=False),
    )
    source, purchases = (OFFERS, 0), (SETTINGS.topic_purchases, 0)
    caplog.set_level(logging.WARNING, logger="stream_app.pipeline")
    held = pipeline.validate(
        {source: [offer_record(0)]}, behind={source: False, purchases: None}, now=100.0
    )
    assert held == [] and caplog.messages == []
    still = pipeline.validate({}, behind={source: False, purchases: None}, now=110.0)
    assert forwarded_offsets(still) == []
    assert len(caplog.messages) == 1
    assert str([purchases]) in caplog.messages[0] and "wait" in caplog.messages[0]
    pipeline.validate({}, behind={source: False, purchases: None}, now=120.0)
    assert len(caplog.messages) == 1
    released = pipeline.validate({}, behind={source: False, purchases: False}, now=121.0)
    assert forwarded_offsets(released) == [0]
