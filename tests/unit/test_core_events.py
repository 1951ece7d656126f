"""Validation of the two input events (contract: "Input events", "Rejected input")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.codec import event_from_row, event_to_row
from stream_app.domain.events import (
    BAD_TS,
    MISSING_FIELD,
    NEGATIVE_AMOUNT,
    NOT_JSON,
    NOT_OBJECT,
    REJECT_REASONS,
    WRONG_TYPE,
    InvalidEvent,
    Offer,
    Purchase,
    parse_offer,
    parse_purchase,
    parse_ts,
)
from stream_app.domain.forwarding import Forwarded, decode_forwarded, encode_forwarded

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_of(moment: datetime) -> int:
    """Ground truth for a ts: exact integer milliseconds since the epoch."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


TS = "2026-11-22T10:15:00Z"
TS_MS = ms_of(datetime(2026, 11, 22, 10, 15, tzinfo=UTC))

OFFER: dict[str, Any] = {
    "event_id": "ev-1",
    "offer_id": "of-1",
    "customer_id": "cu-1",
    "channel": "email",
    "segment": "smb",
    "ts": TS,
}
PURCHASE: dict[str, Any] = {
    "event_id": "ev-2",
    "order_id": "or-1",
    "customer_id": "cu-1",
    "ts": TS,
    "amount": 12.5,
}


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def without(base: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in base.items() if key != name}


def rejected(parse: Any, message: bytes | None) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse(message)
    assert caught.value.reason in REJECT_REASONS
    return str(caught.value.reason)


# -- valid offers -------------------------------------------------------------------


def test_offer_with_required_fields_only() -> None:
    assert parse_offer(raw(OFFER)) == Offer(
        event_id="ev-1",
        offer_id="of-1",
        customer_id="cu-1",
        channel="email",
        segment="smb",
        ts=TS_MS,
    )


def test_offer_optional_fields_and_unknown_extras() -> None:
    doc = with_(
        OFFER,
        campaign_id="camp-7",
        campaign_type="limited_time",
        product_line="broadband",
        loyalty_member=True,
        offered_price=19,
        something_new={"nested": [1, 2]},
        another=None,
    )
    parsed = parse_offer(raw(doc))
    assert parsed.campaign_id == "camp-7"
    assert parsed.campaign_type == "limited_time"
    assert parsed.product_line == "broadband"
    assert parsed.loyalty_member is True
    assert parsed.offered_price == 19.0
    assert parsed.ts == TS_MS


def test_offer_optional_fields_null_are_absent() -> None:
    doc = with_(OFFER, campaign_id=None, loyalty_member=None, offered_price=None)
    parsed = parse_offer(raw(doc))
    assert (parsed.campaign_id, parsed.loyalty_member, parsed.offered_price) == (None, None, None)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-22T10:15:00Z", datetime(2026, 11, 22, 10, 15, tzinfo=UTC)),
        ("2026-11-22T10:15:00z", datetime(2026, 11, 22, 10, 15, tzinfo=UTC)),
        ("2026-11-22t10:15:00Z", datetime(2026, 11, 22, 10, 15, tzinfo=UTC)),
        ("2026-11-22T11:15:00+01:00", datetime(2026, 11, 22, 10, 15, tzinfo=UTC)),
        ("2026-11-22T05:45:00-04:30", datetime(2026, 11, 22, 10, 15, tzinfo=UTC)),
        ("2026-11-22T10:15:00+00:00", datetime(2026, 11, 22, 10, 15, tzinfo=UTC)),
        ("2026-11-22T10:15:00.5Z", datetime(2026, 11, 22, 10, 15, 0, 500_000, tzinfo=UTC)),
        ("2026-11-22T10:15:00.123Z", datetime(2026, 11, 22, 10, 15, 0, 123_000, tzinfo=UTC)),
        # sub-millisecond digits are dropped
        ("2026-11-22T10:15:00.123999Z", datetime(2026, 11, 22, 10, 15, 0, 123_000, tzinfo=UTC)),
        ("2026-11-22T11:15:00.250+01:00", datetime(2026, 11, 22, 10, 15, 0, 250_000, tzinfo=UTC)),
        ("1969-07-20T20:17:40Z", datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC)),
        ("2000-02-29T23:59:59.999Z", datetime(2000, 2, 29, 23, 59, 59, 999_000, tzinfo=UTC)),
    ],
)
def test_rfc3339_ts(ts: str, expected: datetime) -> None:
    assert parse_offer(raw(with_(OFFER, ts=ts))).ts == ms_of(expected)
    assert parse_purchase(raw(with_(PURCHASE, ts=ts))).ts == ms_of(expected)


@pytest.mark.parametrize("ts", [0, 1, -1, TS_MS, 1_795_305_600_123, -86_400_000])
def test_integer_epoch_ms_ts(ts: int) -> None:
    assert parse_offer(raw(with_(OFFER, ts=ts))).ts == ts
    assert parse_purchase(raw(with_(PURCHASE, ts=ts))).ts == ts


def test_ts_range_limits() -> None:
    first = ms_of(datetime(1, 1, 1, tzinfo=UTC))
    last = ms_of(datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC))
    assert parse_ts(first) == first
    assert parse_ts(last) == last
    for outside in (first - 1, last + 1, 10**20, -(10**20)):
        with pytest.raises(InvalidEvent) as caught:
            parse_ts(outside)
        assert caught.value.reason == BAD_TS


# -- valid purchases ----------------------------------------------------------------


def test_purchase_required_fields_only() -> None:
    parsed = parse_purchase(raw(PURCHASE))
    assert parsed == Purchase(
        event_id="ev-2",
        order_id="or-1",
        customer_id="cu-1",
        ts=TS_MS,
        amount_micros=12_500_000,
        offer_id=None,
        is_upsell=False,
    )
    assert not parsed.is_last_touch


@pytest.mark.parametrize(
    ("offer_id", "is_upsell", "expected_upsell", "last_touch"),
    [
        (None, None, False, False),  # default: false without offer_id
        ("of-1", None, True, False),  # default: true with offer_id
        (None, True, True, True),
        (None, False, False, False),
        ("of-1", False, False, False),
        ("of-1", True, True, False),
    ],
)
def test_purchase_is_upsell_default(
    offer_id: str | None, is_upsell: bool | None, expected_upsell: bool, last_touch: bool
) -> None:
    doc = dict(PURCHASE)
    if offer_id is not None:
        doc["offer_id"] = offer_id
    if is_upsell is not None:
        doc["is_upsell"] = is_upsell
    parsed = parse_purchase(raw(doc))
    assert parsed.offer_id == offer_id
    assert parsed.is_upsell is expected_upsell
    assert parsed.is_last_touch is last_touch


def test_purchase_explicit_null_offer_id_defaults_is_upsell_false() -> None:
    parsed = parse_purchase(raw(with_(PURCHASE, offer_id=None)))
    assert parsed.offer_id is None
    assert parsed.is_upsell is False


@pytest.mark.parametrize(
    ("amount", "micros"),
    [(0, 0), (0.0, 0), (12, 12_000_000), (0.1, 100_000), (19.99, 19_990_000), (1e9, 10**15)],
)
def test_purchase_amount_micros(amount: float, micros: int) -> None:
    assert parse_purchase(raw(with_(PURCHASE, amount=amount))).amount_micros == micros


def test_purchase_optional_fields_and_unknown_extras() -> None:
    doc = with_(
        PURCHASE, product_line="tv", loyalty_member=False, offer_id="of-9", extra=[1], x=None
    )
    parsed = parse_purchase(raw(doc))
    assert (parsed.product_line, parsed.loyalty_member, parsed.offer_id) == ("tv", False, "of-9")
    assert parsed.is_upsell is True


# -- rejects ------------------------------------------------------------------------


@pytest.mark.parametrize("parse", [parse_offer, parse_purchase])
@pytest.mark.parametrize(
    "message",
    [
        None,
        b"",
        b"\xff\xfe{}",
        '{"event_id": "caf\u00e9"}'.encode("latin-1"),
        b'{"event_id": "ev-1", "ts": ',
        b"{'event_id': 'single quotes'}",
        b'{"amount": NaN}',
        b'{"amount": Infinity}',
        b'{"amount": -Infinity}',
        b"[" * 100_000,
    ],
    ids=[
        "none",
        "empty",
        "not-utf8",
        "latin1",
        "truncated",
        "single-quotes",
        "nan",
        "infinity",
        "minus-infinity",
        "deep",
    ],
)
def test_not_json(parse: Any, message: bytes | None) -> None:
    assert rejected(parse, message) == NOT_JSON


@pytest.mark.parametrize("parse", [parse_offer, parse_purchase])
@pytest.mark.parametrize("message", [b"[]", b'[{"event_id": "x"}]', b'"text"', b"42", b"null"])
def test_not_object(parse: Any, message: bytes) -> None:
    assert rejected(parse, message) == NOT_OBJECT


OFFER_REQUIRED = ["event_id", "offer_id", "customer_id", "channel", "segment", "ts"]
PURCHASE_REQUIRED = ["event_id", "order_id", "customer_id", "ts", "amount"]


@pytest.mark.parametrize("name", OFFER_REQUIRED)
@pytest.mark.parametrize("how", ["absent", "null", "empty"])
def test_offer_missing_field(name: str, how: str) -> None:
    if how == "empty" and name == "ts":
        expected = BAD_TS  # an empty ts is present but unparseable
    else:
        expected = MISSING_FIELD
    doc = {
        "absent": without(OFFER, name),
        "null": with_(OFFER, **{name: None}),
        "empty": with_(OFFER, **{name: ""}),
    }[how]
    assert rejected(parse_offer, raw(doc)) == expected


@pytest.mark.parametrize("name", PURCHASE_REQUIRED)
@pytest.mark.parametrize("how", ["absent", "null", "empty"])
def test_purchase_missing_field(name: str, how: str) -> None:
    if how == "empty" and name == "ts":
        expected = BAD_TS
    elif how == "empty" and name == "amount":
        expected = WRONG_TYPE  # "" is a string where a number is required
    else:
        expected = MISSING_FIELD
    doc = {
        "absent": without(PURCHASE, name),
        "null": with_(PURCHASE, **{name: None}),
        "empty": with_(PURCHASE, **{name: ""}),
    }[how]
    assert rejected(parse_purchase, raw(doc)) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("event_id", 17),
        ("offer_id", 17),
        ("customer_id", 12345),
        ("channel", ["email"]),
        ("segment", {"x": 1}),
        ("customer_id", True),
        ("ts", True),
        ("ts", 1.7e12),
        ("ts", [2026]),
        ("campaign_id", 5),
        ("campaign_type", False),
        ("product_line", 3.5),
        ("loyalty_member", "yes"),
        ("loyalty_member", 1),
        ("offered_price", "9.99"),
        ("offered_price", True),
    ],
)
def test_offer_wrong_type(name: str, value: Any) -> None:
    assert rejected(parse_offer, raw(with_(OFFER, **{name: value}))) == WRONG_TYPE


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("event_id", 1),
        ("order_id", 1.5),
        ("customer_id", 99),
        ("amount", "12.50"),
        ("amount", True),
        ("amount", False),
        ("amount", [1]),
        ("amount", 1e16),
        ("ts", False),
        ("ts", 1795342500000.0),
        ("offer_id", 7),
        ("is_upsell", "true"),
        ("is_upsell", 1),
        ("product_line", 1),
        ("loyalty_member", "no"),
    ],
)
def test_purchase_wrong_type(name: str, value: Any) -> None:
    assert rejected(parse_purchase, raw(with_(PURCHASE, **{name: value}))) == WRONG_TYPE


@pytest.mark.parametrize("amount", [-0.01, -1, -1e9])
def test_negative_amount(amount: float) -> None:
    assert rejected(parse_purchase, raw(with_(PURCHASE, amount=amount))) == NEGATIVE_AMOUNT


def test_negative_offered_price() -> None:
    assert rejected(parse_offer, raw(with_(OFFER, offered_price=-1))) == NEGATIVE_AMOUNT


def test_negative_zero_amount_is_valid() -> None:
    assert parse_purchase(raw(with_(PURCHASE, amount=-0.0))).amount_micros == 0


@pytest.mark.parametrize(
    "ts",
    [
        "yesterday",
        "2026-11-22",  # date without time
        "2026-11-22T10:15:00",  # no offset
        "2026-11-22T10:15:00.123",  # no offset, fractional
        "2026-11-22T10:15Z",  # no seconds
        "2026-13-01T10:15:00Z",  # month 13
        "2026-02-30T10:15:00Z",  # no such day
        "2026-11-22T25:15:00Z",
        "2026-11-22X10:15:00Z",
        "",
        "   ",
        "1795342500000",  # epoch ms as a string
    ],
)
def test_bad_ts_string(ts: str) -> None:
    assert rejected(parse_offer, raw(with_(OFFER, ts=ts))) == BAD_TS
    assert rejected(parse_purchase, raw(with_(PURCHASE, ts=ts))) == BAD_TS


@pytest.mark.parametrize("ts", [253_402_300_800_000, -62_135_596_800_001, 10**19])
def test_bad_ts_out_of_range_int(ts: int) -> None:
    assert rejected(parse_offer, raw(with_(OFFER, ts=ts))) == BAD_TS
    assert rejected(parse_purchase, raw(with_(PURCHASE, ts=ts))) == BAD_TS


def test_reject_detail_and_message() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_offer(raw(without(OFFER, "channel")))
    assert caught.value.reason == MISSING_FIELD
    assert "channel" in caught.value.detail
    assert str(caught.value).startswith("missing_field: ")


# -- properties ---------------------------------------------------------------------

identifiers = st.text(min_size=1, max_size=12)
valid_ms = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)


def rfc3339_text(moment: datetime, offset_minutes: int) -> str:
    local = moment + timedelta(minutes=offset_minutes)
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    suffix = "Z" if offset_minutes == 0 else f"{sign}{hours:02d}:{minutes:02d}"
    fraction = f".{local.microsecond:06d}" if local.microsecond else ""
    return local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + suffix


@st.composite
def ts_values(draw: st.DrawFn) -> tuple[Any, int]:
    """A ts as it may appear in a message, and its value in epoch ms."""
    if draw(st.booleans()):
        ms = draw(valid_ms)
        return ms, ms
    moment = draw(
        st.datetimes(
            min_value=datetime(1000, 1, 2),
            max_value=datetime(9999, 12, 30),
        )
    ).replace(tzinfo=UTC)
    offset = draw(st.sampled_from([0, 60, -60, 330, -270, 840, -720]))
    return rfc3339_text(moment, offset), ms_of(moment)


amounts = st.one_of(
    st.integers(min_value=0, max_value=10**12),
    st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False),
)
extras = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(
        lambda k: (
            k
            not in {
                *OFFER_REQUIRED,
                *PURCHASE_REQUIRED,
                "order_id",
                "offer_id",
                "campaign_id",
                "campaign_type",
                "product_line",
                "loyalty_member",
                "offered_price",
                "is_upsell",
            }
        )
    ),
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.booleans()),
    max_size=3,
)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(...), st.none(), strategy)  # ... = field absent


def put(doc: dict[str, Any], name: str, value: Any) -> None:
    if value is not ...:
        doc[name] = value


@settings(max_examples=100, deadline=None)
@given(
    ids=st.tuples(identifiers, identifiers, identifiers, identifiers, identifiers),
    ts=ts_values(),
    campaign=optional(st.text(max_size=8)),
    loyalty=optional(st.booleans()),
    price=optional(amounts),
    extra=extras,
)
def test_any_valid_offer_parses_and_round_trips(
    ids: tuple[str, ...],
    ts: tuple[Any, int],
    campaign: Any,
    loyalty: Any,
    price: Any,
    extra: dict[str, Any],
) -> None:
    doc: dict[str, Any] = dict(extra)
    doc.update(zip(["event_id", "offer_id", "customer_id", "channel", "segment"], ids, strict=True))
    doc["ts"] = ts[0]
    put(doc, "campaign_id", campaign)
    put(doc, "loyalty_member", loyalty)
    put(doc, "offered_price", price)
    parsed = parse_offer(raw(doc))
    assert (
        parsed.event_id,
        parsed.offer_id,
        parsed.customer_id,
        parsed.channel,
        parsed.segment,
    ) == ids
    assert parsed.ts == ts[1]
    assert parsed.campaign_id == (None if campaign is ... else campaign)
    assert parsed.loyalty_member == (None if loyalty is ... else loyalty)
    assert parsed.offered_price == (None if price in (..., None) else float(price))
    assert event_from_row(event_to_row(parsed)) == parsed
    assert event_from_row(json.loads(json.dumps(event_to_row(parsed)))) == parsed
    item = Forwarded("upsell.offers", 3, 41, ts[1], parsed)
    assert decode_forwarded(encode_forwarded(item)) == item


@settings(max_examples=100, deadline=None)
@given(
    ids=st.tuples(identifiers, identifiers, identifiers),
    ts=ts_values(),
    amount=amounts,
    offer_id=optional(identifiers),
    is_upsell=optional(st.booleans()),
    loyalty=optional(st.booleans()),
    extra=extras,
)
def test_any_valid_purchase_parses_and_round_trips(
    ids: tuple[str, ...],
    ts: tuple[Any, int],
    amount: float,
    offer_id: Any,
    is_upsell: Any,
    loyalty: Any,
    extra: dict[str, Any],
) -> None:
    doc: dict[str, Any] = dict(extra)
    doc.update(zip(["event_id", "order_id", "customer_id"], ids, strict=True))
    doc["ts"] = ts[0]
    doc["amount"] = amount
    put(doc, "offer_id", offer_id)
    put(doc, "is_upsell", is_upsell)
    put(doc, "loyalty_member", loyalty)
    parsed = parse_purchase(raw(doc))
    expected_offer = None if offer_id is ... else offer_id
    assert (parsed.event_id, parsed.order_id, parsed.customer_id) == ids
    assert parsed.ts == ts[1]
    assert parsed.offer_id == expected_offer
    assert parsed.is_upsell == (
        (expected_offer is not None) if is_upsell in (..., None) else is_upsell
    )
    assert abs(parsed.amount_micros - amount * 1_000_000) <= 0.5 + amount * 1e-9
    assert parsed.amount_micros >= 0
    assert event_from_row(event_to_row(parsed)) == parsed
    assert event_from_row(json.loads(json.dumps(event_to_row(parsed)))) == parsed
    item = Forwarded("upsell.purchases", 0, 7, None, parsed)
    assert decode_forwarded(encode_forwarded(item)) == item


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_else(message: bytes) -> None:
    for parse in (parse_offer, parse_purchase):
        try:
            parse(message)
        except InvalidEvent as error:
            assert error.reason in REJECT_REASONS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(
    base=st.sampled_from([OFFER, PURCHASE]),
    overrides=st.dictionaries(
        st.sampled_from(
            [
                *OFFER_REQUIRED,
                *PURCHASE_REQUIRED,
                "offer_id",
                "is_upsell",
                "offered_price",
                "loyalty_member",
            ]
        ),
        json_values,
        max_size=3,
    ),
)
def test_arbitrary_field_values_never_raise_anything_else(
    base: dict[str, Any], overrides: dict[str, Any]
) -> None:
    message = raw(with_(base, **overrides))
    for parse in (parse_offer, parse_purchase):
        try:
            parse(message)
        except InvalidEvent as error:
            assert error.reason in REJECT_REASONS
