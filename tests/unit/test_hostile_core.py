"""Hostile input at the core: validation never fails otherwise than by InvalidEvent, the
label cap bounds memory however many distinct values arrive, and it survives restarts.

The e2e counterpart (tests/e2e/test_hostile_input.py) sends the corpus through the worker.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.domain.events import (
    FUTURE_TS,
    MAX_VALUE_CHARS,
    MISSING_FIELD,
    REJECT_REASONS,
    TOO_LONG,
    WRONG_TYPE,
    Event,
    InvalidEvent,
    Offer,
    Purchase,
    parse_offer,
    parse_purchase,
)
from stream_app.domain.forwarding import Forwarded, decode_forwarded, encode_forwarded
from stream_app.domain.labels import MAX_LABEL_CHARS, OTHER, LabelCap
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.totals import LABEL_OVERFLOW_TOTAL, OFFERS_TOTAL, PURCHASES_TOTAL
from stream_app.domain.views import ALL, CHANNEL_SEGMENT
from stream_app.domain.window_config import WindowConfig
from stream_app.domain.windows import civil_from_days, rfc3339, window_start
from tests.unit.conftest import canonical_store

SECOND = 1_000
MINUTE = 60 * SECOND
T0 = 1_795_305_600_000  # 2026-11-22T00:00:00Z
MIN_TS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
TOPIC = "upsell.offers"

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
OFFER_FIELDS = (
    "event_id",
    "offer_id",
    "customer_id",
    "channel",
    "segment",
    "ts",
    "campaign_id",
    "campaign_type",
    "product_line",
    "loyalty_member",
    "offered_price",
)
PURCHASE_FIELDS = (
    "event_id",
    "order_id",
    "customer_id",
    "ts",
    "amount",
    "offer_id",
    "is_upsell",
    "product_line",
    "loyalty_member",
)
# Values that hostile producers send: the awkward corners of each JSON type.
awkward: st.SearchStrategy[Any] = st.sampled_from(
    [
        "",
        "__all__",
        "__other__",
        "__none__",
        "\ud800",
        "x" * 5000,
        "9999-12-31T23:59:59.999Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "1969-07-20T20:17:00Z",
        -1,
        0,
        MAX_TS,
        MAX_TS + 1,
        MIN_TS,
        MIN_TS - 1,
        10**30,
        -(10**30),
        1e308,
        -0.0,
        1.5,
        True,
        False,
        None,
        [],
        {},
        [[[]]],
    ]
)


def check_outcome(parse: Any, raw: bytes) -> Event | None:
    """The only ways out of a parser: an event that is safe downstream, or InvalidEvent."""
    try:
        event: Event = parse(raw)
    except InvalidEvent as error:
        assert error.reason in REJECT_REASONS
        error.detail.encode("utf-8", "replace")
        return None
    for value in vars_of(event):
        if isinstance(value, str):
            value.encode("utf-8")  # usable as a Kafka key, label and topic text
            assert len(value) <= MAX_VALUE_CHARS
    assert MIN_TS <= event.ts <= MAX_TS
    rfc3339(event.ts)
    return event


def vars_of(event: Event) -> list[Any]:
    return [getattr(event, field.name) for field in fields(event)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_an_event_or_a_reject(raw: bytes) -> None:
    check_outcome(parse_offer, raw)
    check_outcome(parse_purchase, raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(OFFER_FIELDS + PURCHASE_FIELDS), json_values | awkward, max_size=14
    )
)
def test_arbitrary_objects_are_an_event_or_a_reject(fields: dict[str, Any]) -> None:
    raw = json.dumps(fields, allow_nan=True).encode("utf-8", "surrogatepass")
    check_outcome(parse_offer, raw)
    check_outcome(parse_purchase, raw)


def valid_offer(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "offer_id": "o1",
        "customer_id": "c1",
        "channel": "email",
        "segment": "smb",
        "ts": T0,
        **overrides,
    }


def reason(raw: bytes, latest_ts: int | None = None) -> str | None:
    try:
        parse_offer(raw, latest_ts)
    except InvalidEvent as error:
        return error.reason
    return None


def test_hostile_values_get_their_reasons() -> None:
    def doc(**overrides: Any) -> bytes:
        return json.dumps(valid_offer(**overrides)).encode("utf-8", "surrogatepass")

    assert reason(b"\xff\xfe{}") == "not_json"
    assert reason(b"[" * 200_000 + b"]" * 200_000) == "not_json"  # too deep, no crash
    assert reason(b'{"a":' * 100_000 + b"1" + b"}" * 100_000) == "not_json"
    assert reason(doc(offered_price=float("nan"))) == "not_json"
    assert reason(doc(offered_price=float("inf"))) == "not_json"
    assert reason(doc(offered_price=1e400)) == "not_json"  # json.dumps writes Infinity
    assert (
        reason(doc().replace(b'"ts": ' + str(T0).encode(), b'"ts": ' + b"9" * 5000)) == "not_json"
    )  # beyond Python's integer-string limit
    assert reason(doc(offered_price=10**30)) == WRONG_TYPE
    assert reason(doc(ts=10**30)) == "bad_ts"
    assert reason(doc(ts=float(T0))) == WRONG_TYPE
    assert reason(doc(ts="0001-01-01T00:00:00+01:00")) == "bad_ts"
    assert reason(doc(ts="9999-12-31T23:59:59-01:00")) == "bad_ts"
    assert reason(doc(segment="\ud800")) == WRONG_TYPE
    assert reason(doc(segment=17)) == WRONG_TYPE
    assert reason(doc(segment="")) == MISSING_FIELD
    assert reason(doc(segment="x" * 1_000_000)) == TOO_LONG
    assert reason(doc(customer_id="x" * 257)) == TOO_LONG
    assert reason(doc(ts=MAX_TS), latest_ts=T0) == FUTURE_TS
    # Valid, however odd: the windows and the published records must cope.
    assert reason(doc(ts="1969-07-20T20:17:00Z")) is None
    assert reason(doc(ts=MAX_TS)) is None
    assert reason(doc(ts=MIN_TS)) is None
    assert reason(doc(segment="x" * 256)) is None
    assert reason(doc(padding="p" * 1_000_000)) is None


def test_rfc3339_is_total() -> None:
    # Windows of events in year 9999 end in year 10000; near year 1 they may start before.
    assert rfc3339(MAX_TS) == "9999-12-31T23:59:59.999Z"
    assert rfc3339(MAX_TS + 1) == "+10000-01-01T00:00:00.000Z"
    assert rfc3339(MIN_TS) == "0001-01-01T00:00:00.000Z"
    assert rfc3339(MIN_TS - 1) == "0000-12-31T23:59:59.999Z"
    assert rfc3339(window_start(MIN_TS, 7 * 86_400_000)).startswith("0000-12-")
    assert rfc3339(-(10**18)).startswith("-")


@given(st.integers(min_value=-719_162, max_value=2_932_896))
def test_civil_from_days_agrees_with_datetime(days: int) -> None:
    from datetime import date, timedelta

    moment = date(1970, 1, 1) + timedelta(days=days)
    assert civil_from_days(days) == (moment.year, moment.month, moment.day)


# -- the label cap ------------------------------------------------------------------------

CAP = 50
CONFIG = WindowConfig(
    sizes=(("5m", 5 * MINUTE),), attribution_ms=SECOND, grace_ms=0, max_label_values=CAP
)


class Driver:
    def __init__(self, partition: CustomerPartition) -> None:
        self.partition = partition
        self.offset = 0
        self.store: dict[str, Any] = {}

    def send(self, event: Event, wire: bool = False) -> None:
        item = Forwarded(TOPIC, 0, self.offset, None, event)
        if wire:
            item = decode_forwarded(encode_forwarded(item))
        self.partition.apply(item, self.offset)
        self.offset += 1

    def persist(self) -> None:
        self.partition.take_partials()
        for key, value in self.partition.take_changes().items():
            if value is None:
                self.store.pop(key, None)
            else:
                self.store[key] = value


def offer(
    n: int,
    segment: str,
    *,
    channel: str = "email",
    ts: int | None = None,
    product_line: str | None = None,
) -> Offer:
    return Offer(
        f"e{n}",
        f"o{n}",
        f"c{n % 97}",
        channel,
        segment,
        T0 + n if ts is None else ts,
        product_line=product_line,
    )


def segments_of(partition: CustomerPartition) -> set[str]:
    return {segment for _, segment in partition.totals[OFFERS_TOTAL]}


def test_a_million_distinct_segments_take_bounded_room() -> None:
    cap = LabelCap(CAP, expire_ms=3_600 * SECOND)  # none leaves within these 1,000 s
    overflowed = 0
    for n in range(1_000_000):
        event, dimensions = cap.cap(offer(n, f"seg-{n}", channel=f"ch-{n % 3}"), None)
        overflowed += len(dimensions)
        assert isinstance(event, Offer)
        assert event.segment == (f"seg-{n}" if n < CAP else OTHER)
    assert overflowed == 1_000_000 - CAP
    assert cap.admitted("segment") == {f"seg-{n}" for n in range(CAP)}
    assert len(cap.take_changes()) == CAP + 3


def test_distinct_segments_through_a_partition_keep_its_state_bounded() -> None:
    # The whole partition (totals, windows, kept offers, stored entries) on 200,000 offers
    # with distinct segments, one per ms; the million above runs through the cap alone,
    # for time. A value used once leaves when stream time passes its use + the
    # attribution window (1 s) + an eighth of it: CAP values are counted in each 1,126 ms.
    partition = CustomerPartition(CONFIG)
    cycle = SECOND + SECOND // 8 + 1
    counted = {f"seg-{n}" for n in range(200_000) if n % cycle < CAP}
    driver = Driver(partition)
    total, batch = 200_000, 20_000
    largest_batch_state = 0
    for first in range(0, total, batch):
        for n in range(first, first + batch):
            driver.send(offer(n, f"seg-{n}"))
        driver.persist()
        largest_batch_state = max(largest_batch_state, len(driver.store))
        assert len(partition.admitted_labels("segment")) <= CAP
        assert sum(key.startswith("l|") for key in driver.store) <= CAP + 1  # + channel
    totals = partition.totals
    assert sum(totals[OFFERS_TOTAL].values()) == total
    assert totals[OFFERS_TOTAL][("email", OTHER)] == total - len(counted)
    assert totals[LABEL_OVERFLOW_TOTAL] == {("segment",): total - len(counted)}
    assert segments_of(partition) == counted | {OTHER}
    assert partition.admitted_labels("segment") == {
        f"seg-{n}" for n in range(total - cycle, total) if n % cycle < CAP
    }
    # Windows hold the capped labels only, and their roll-ups.
    for start in {window_start(T0 + n, 5 * MINUTE) for n in range(0, total, 997)}:
        keys = partition.window_vectors(CHANNEL_SEGMENT, ("5m", start))
        assert {segment for _, segment in keys} <= counted | {OTHER, ALL}
    # Stored state: the events of about one batch (ids expire after 1 s of event time),
    # one entry per admitted label, not one per segment ever seen.
    assert largest_batch_state < 3 * batch
    assert sum(key.startswith("l|") for key in driver.store) == CAP + 1  # + channel email
    assert partition.open_offers() < 2 * batch


def test_the_cap_is_per_dimension_and_reserved_and_long_values_are_other() -> None:
    partition = CustomerPartition(
        WindowConfig(
            sizes=(("5m", 5 * MINUTE),), attribution_ms=MINUTE, grace_ms=0, max_label_values=2
        )
    )
    driver = Driver(partition)
    driver.send(offer(1, "a", channel="email", product_line="p1"))
    driver.send(offer(2, "b", channel="sms", product_line="p2"))
    driver.send(offer(3, "c", channel="web", product_line="p3"))
    driver.send(offer(4, "a", channel="email"))
    driver.send(offer(5, "__all__", channel="email"))
    driver.send(offer(6, "__other__", channel="email"))
    driver.send(offer(7, "x" * (MAX_LABEL_CHARS + 1), channel="email"))
    driver.send(Purchase("p8", "o8", "c1", T0 + 8, 1_000_000, product_line="p4"))
    totals = partition.totals
    assert totals[OFFERS_TOTAL] == {
        ("email", "a"): 2,
        ("sms", "b"): 1,
        (OTHER, OTHER): 1,
        ("email", OTHER): 3,
    }
    assert totals[LABEL_OVERFLOW_TOTAL] == {("channel",): 1, ("segment",): 4, ("product_line",): 2}
    assert totals[PURCHASES_TOTAL] == {("other", "unknown", OTHER): 1}
    # A reserved value never takes a place, however empty the cap.
    assert partition.admitted_labels("segment") == {"a", "b"}


def test_the_admitted_labels_survive_a_restart_and_decide_as_before() -> None:
    events = [offer(n, f"s{n % 70}", ts=T0 + n * 10) for n in range(400)]
    uninterrupted = Driver(CustomerPartition(CONFIG))
    for event in events:
        uninterrupted.send(event, wire=True)
    uninterrupted.persist()

    first = Driver(CustomerPartition(CONFIG))
    for event in events[:120]:
        first.send(event, wire=True)
    first.persist()
    # A new worker rebuilds the partition from its stored entries and reads on.
    restored = Driver(CustomerPartition.restore(CONFIG, dict(first.store)))
    restored.offset = first.offset
    restored.store = dict(first.store)
    for event in events[120:]:
        restored.send(event, wire=True)
    restored.persist()
    assert restored.partition.totals.as_row() == uninterrupted.partition.totals.as_row()
    assert restored.partition.admitted_labels("segment") == uninterrupted.partition.admitted_labels(
        "segment"
    )
    assert canonical_store(restored.store) == canonical_store(uninterrupted.store)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=8)
            | awkward.filter(lambda v: isinstance(v, str) and v != "" and "\ud800" not in v),
            st.integers(min_value=MIN_TS, max_value=MAX_TS),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_any_valid_offers_keep_every_dimension_capped(values: list[tuple[str, int]]) -> None:
    partition = CustomerPartition(
        WindowConfig(
            sizes=(("5m", 5 * MINUTE), ("7d", 7 * 86_400_000)),
            attribution_ms=MINUTE,
            grace_ms=0,
            max_label_values=3,
        )
    )
    driver = Driver(partition)
    for n, (value, ts) in enumerate(values):
        driver.send(offer(n, value, channel=value, ts=ts, product_line=value), wire=True)
        driver.persist()
        for dimension in ("channel", "segment", "product_line"):
            assert len(partition.admitted_labels(dimension)) <= 3
    assert sum(partition.totals[OFFERS_TOTAL].values()) == len(values)
    restored = CustomerPartition.restore(partition.config, dict(driver.store))
    assert restored.totals.as_row() == partition.totals.as_row()
    for dimension in ("channel", "segment", "product_line"):
        assert restored.admitted_labels(dimension) == partition.admitted_labels(dimension)


# -- the corpus of tests/corpus (also sent through the worker by the e2e tests) ------------

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def test_every_corpus_message_gets_the_reason_its_manifest_names() -> None:
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    assert len(manifest["cases"]) >= 30
    # As the worker validates with the default UPSELL_MAX_FUTURE of 1h.
    latest_ts = int(time.time() * 1000) + 3_600_000
    reasons = set()
    for case in manifest["cases"]:
        parse = parse_offer if case["topic"] == "offers" else parse_purchase
        raw = (CORPUS / case["file"]).read_bytes()
        reasons.add(case["reason"])
        try:
            check_outcome(parse, raw)
            parse(raw, latest_ts)
        except InvalidEvent as error:
            assert error.reason == case["reason"], case
        else:
            assert case["reason"] is None, case
    assert reasons == {*REJECT_REASONS, None}
