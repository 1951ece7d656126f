"""The compiled acceptance of input events (engine/src/parse.rs) against events.py's rules.

`parse_offer`/`parse_purchase` first ask the compiled core, which accepts only messages
valid beyond doubt and leaves every other one to `check_offer`/`check_purchase`: those
decide each rejection with its reason and detail. So for any message, the compiled core
either leaves it or returns exactly what the rules return (same values and types, -0.0
and int vs float included), and it does accept what producers normally send.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app import _engine
from stream_app.domain.events import (
    Event,
    InvalidEvent,
    check_offer,
    check_purchase,
    parse_offer,
    parse_purchase,
)
from stream_app.tools.simulator.scenario import ScenarioConfig, Simulation

MIN_TS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
T0 = 1_795_305_600_000

Accept = Callable[[bytes, int | None], Event | None]
Check = Callable[[bytes | None, int | None], Event]


def agree(accept: Accept, check: Check, raw: bytes, latest_ts: int | None) -> bool:
    """Whether the compiled core accepted the message; fails if it disagrees with the rules."""
    accepted = accept(raw, latest_ts)
    try:
        expected = check(raw, latest_ts)
    except InvalidEvent:
        assert accepted is None, raw
        return False
    if accepted is not None:
        assert repr(accepted) == repr(expected), raw
        assert [type(v) for v in vars_of(accepted)] == [type(v) for v in vars_of(expected)]
    return accepted is not None


def vars_of(event: Event) -> list[Any]:
    return [getattr(event, field.name) for field in fields(event)]


digits2 = st.integers(0, 99).map(lambda n: f"{n:02d}")
# RFC 3339 and near misses: every part in and just out of range, fractions of 0-8 digits,
# Z, z, offsets and their near misses, the separators Python accepts and others.
timestamps = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, zone: f"{y:04d}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{zone}",
    st.integers(0, 10_000),
    digits2,
    digits2,
    st.sampled_from(["T", "t", " ", "x"]),
    digits2,
    digits2,
    digits2,
    st.sampled_from(["", "."])
    | st.integers(0, 8).flatmap(
        lambda n: st.text("0123456789", min_size=n, max_size=n).map(lambda f: "." + f)
    ),
    st.sampled_from(
        ["Z", "z", "", "+00:00", "-00:00", "+01:00", "-23:59", "+24:00", "+0100", "+01:00:30", "Zz"]
    )
    | st.builds(lambda h, m: f"+{h}:{m}", digits2, digits2),
)
texts = st.sampled_from(
    [
        "",
        "a",
        "email",
        "__all__",
        "x" * 256,
        "x" * 257,
        "é" * 256,
        "é" * 257,
        "\U0001f600",
        "\ud800",
        "a\x00b",
    ]
) | st.text(max_size=12)
numbers = (
    st.sampled_from(
        [
            0,
            -0.0,
            1,
            -1,
            0.5,
            12.345,
            1e15,
            1e15 - 1,
            999_999_999_999_999,
            10**15,
            -(10**15) + 1,
            1e300,
            9.3e18,
            2**63,
            2**64,
            10**30,
            1.005,
            2.675,
            0.0000005,
            0.0000015,
        ]
    )
    | st.floats(allow_nan=False)
    | st.integers()
)
values: st.SearchStrategy[Any] = (
    texts
    | numbers
    | st.booleans()
    | st.none()
    | timestamps
    | st.just([])
    | st.just({})
    | st.integers(MIN_TS - 2, MAX_TS + 2)
    | st.sampled_from([MIN_TS, MAX_TS, MIN_TS - 1, MAX_TS + 1])
)


@st.composite
def messages(
    draw: st.DrawFn,
    required: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]],
) -> dict[str, Any]:
    """A message with its fields drawn from valid-looking values, then up to two fields
    dropped or given any value, and sometimes an extra field."""
    document = {name: draw(strategy) for name, strategy in required.items()}
    document |= draw(st.fixed_dictionaries({}, optional=optional))
    for name in draw(st.lists(st.sampled_from([*required, *optional, "extra"]), max_size=2)):
        if draw(st.booleans()):
            document.pop(name, None)
        else:
            document[name] = draw(values)
    return document


ids = st.sampled_from(["e1", "o-1", "c\u00e9", "x" * 256, "\U0001f600"])
instants = st.integers(MIN_TS, MAX_TS) | timestamps
OFFER = (
    {
        "event_id": ids,
        "offer_id": ids,
        "customer_id": ids,
        "channel": ids,
        "segment": ids,
        "ts": instants,
    },
    {
        "campaign_id": texts,
        "campaign_type": texts,
        "product_line": texts,
        "loyalty_member": st.booleans() | st.none(),
        "offered_price": numbers | st.none(),
    },
)
PURCHASE = (
    {"event_id": ids, "order_id": ids, "customer_id": ids, "ts": instants, "amount": numbers},
    {
        "offer_id": texts | st.none(),
        "is_upsell": st.booleans() | st.none(),
        "product_line": texts,
        "loyalty_member": st.booleans() | st.none(),
    },
)


def encodings(document: dict[str, Any]) -> list[bytes]:
    encoded = [
        json.dumps(document).encode(),
        json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass"),
    ]
    try:
        encoded.append(orjson.dumps(document))
    except (orjson.JSONEncodeError, TypeError):
        pass
    return encoded


latest = st.none() | st.sampled_from([T0, MIN_TS, MAX_TS])


@settings(max_examples=1500, deadline=None)
@given(messages(*OFFER), latest)
def test_offers_accepted_are_exactly_what_the_rules_accept(
    document: dict[str, Any], latest_ts: int | None
) -> None:
    for raw in encodings(document):
        agree(_engine.accept_offer, check_offer, raw, latest_ts)


@settings(max_examples=1500, deadline=None)
@given(messages(*PURCHASE), latest)
def test_purchases_accepted_are_exactly_what_the_rules_accept(
    document: dict[str, Any], latest_ts: int | None
) -> None:
    for raw in encodings(document):
        agree(_engine.accept_purchase, check_purchase, raw, latest_ts)


@given(
    st.binary(max_size=60)
    | st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"1",
            b'"x"',
            b"\xef\xbb\xbf{}",
            b'{"a":1} x',
            b'{"ts":NaN}',
            b'{"event_id":"e","event_id":"f"}',
            b"{" * 200 + b"}" * 200,
        ]
    )
)
def test_anything_else_is_left_to_the_rules(raw: bytes) -> None:
    agree(_engine.accept_offer, check_offer, raw, None)
    agree(_engine.accept_purchase, check_purchase, raw, None)


def test_what_producers_send_is_accepted_by_the_compiled_core() -> None:
    config = ScenarioConfig(
        offers=300, customers=50, seed=3, offers_topic="offers", purchases_topic="purchases"
    )
    kinds: dict[str, tuple[Accept, Check, Check]] = {
        "offers": (_engine.accept_offer, check_offer, parse_offer),
        "purchases": (_engine.accept_purchase, check_purchase, parse_purchase),
    }
    accepted = 0
    for message in Simulation(config):
        accept, check, parse = kinds[message.topic_kind]
        assert message.value is not None
        try:
            expected = check(message.value, None)
        except InvalidEvent:
            # The simulator sends some malformed messages too: the rules reject them.
            assert not agree(accept, check, message.value, None)
            continue
        # Every valid one takes the compiled way.
        assert agree(accept, check, message.value, None)
        assert repr(parse(message.value, None)) == repr(expected)
        accepted += 1
    assert accepted >= 300


def test_repeated_names_escapes_and_nested_values_read_as_python_reads_them() -> None:
    """A repeated field counts by its last value; an escaped text is the text it encodes;
    an array or object in a field no event has changes nothing."""
    base = '"offer_id":"X","customer_id":"c","channel":"web","segment":"smb","ts":1795305600000'
    cases = {
        '{"event_id":"first","event_id":"last",' + base + "}": True,
        '{"event_id":7,"event_id":"last",' + base + "}": True,
        '{"event_id":"first","event_id":7,' + base + "}": False,
        '{"event_id":"caf\\u00e9 \\"q\\"",' + base + "}": True,
        '{"event_id":"e","extra":[1,{"a":[2.5,null]},"x"],"more":{"k":{}},' + base + "}": True,
        '{"event_id":"e","extra":[1,2.5e400],' + base + "}": None,
    }
    for text, accepted in cases.items():
        raw = text.encode()
        compiled = agree(_engine.accept_offer, check_offer, raw, None)
        if accepted is not None:
            assert compiled is accepted, text
    assert _engine.accept_offer(b'{"event_id":"first","event_id":"last",' + base.encode() + b"}")
    offer = _engine.accept_offer(b'{"event_id":"caf\\u00e9",' + base.encode() + b"}")
    assert offer is not None
    assert offer.event_id == "caf\u00e9"
