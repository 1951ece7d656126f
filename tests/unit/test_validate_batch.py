"""The validating stage's batch call (events.validate_batch, engine/src/accept.rs) against
events.py's rules one message at a time: the same rejections with the same reasons and
details, the same accepted events, each with its customer's partition as the default
partitioner chooses it and its internal topic item as forwarding.py reads it."""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app import _engine
from stream_app.domain.events import InvalidEvent, check_offer, check_purchase, validate_batch
from stream_app.domain.forwarding import Forwarded, decode_forwarded
from tests.unit.test_compiled_acceptance import OFFER, PURCHASE, encodings, latest, messages

PARTITIONS = 6


def default_partition(key: bytes, partitions: int) -> int:
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


def assert_agrees(values: list[bytes | None], offers: bool, latest_ts: int | None) -> None:
    check = check_offer if offers else check_purchase
    outcomes = validate_batch(values, offers, latest_ts, PARTITIONS)
    assert len(outcomes) == len(values)
    for offset, (raw, outcome) in enumerate(zip(values, outcomes, strict=True)):
        try:
            expected = check(raw, latest_ts)
        except InvalidEvent as error:
            assert isinstance(outcome, InvalidEvent), raw
            assert (outcome.reason, outcome.detail) == (error.reason, error.detail)
            continue
        assert not isinstance(outcome, InvalidEvent), raw
        assert repr(outcome.event()) == repr(expected)
        assert (outcome.event_id, outcome.ts) == (expected.event_id, expected.ts)
        assert outcome.key == expected.customer_id.encode()
        assert outcome.partition == default_partition(outcome.key, PARTITIONS)
        item = decode_forwarded(outcome.item("offers", 3, offset, 17 if offset % 2 else None))
        assert repr(item) == repr(
            Forwarded("offers", 3, offset, 17 if offset % 2 else None, expected)
        )


@settings(max_examples=300, deadline=None)
@given(st.lists(messages(*OFFER), max_size=6), latest)
def test_a_batch_of_offers_is_what_the_rules_make_of_each(
    documents: list[dict[str, Any]], latest_ts: int | None
) -> None:
    values: list[bytes | None] = [raw for document in documents for raw in encodings(document)]
    assert_agrees([*values, None, b"", b"[1]"], True, latest_ts)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages(*PURCHASE), max_size=6), latest)
def test_a_batch_of_purchases_is_what_the_rules_make_of_each(
    documents: list[dict[str, Any]], latest_ts: int | None
) -> None:
    values: list[bytes | None] = [raw for document in documents for raw in encodings(document)]
    assert_agrees([None, *values, b"{"], False, latest_ts)


@given(st.binary(max_size=40), st.integers(1, 50))
def test_the_compiled_partitioner_is_kafka_s_murmur2(key: bytes, partitions: int) -> None:
    assert _engine.key_partition(key, partitions) == default_partition(key, partitions)
