"""The two limits of validation (contract: "Rejected input"): values longer than 256
characters (too_long) and a ts more than UPSELL_MAX_FUTURE ahead of the wall clock
(future_ts), at their boundaries, through the setting and through the validating stage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stream_app.domain.events import (
    FUTURE_TS,
    MAX_VALUE_CHARS,
    TOO_LONG,
    InvalidEvent,
    parse_offer,
    parse_purchase,
)
from stream_app.domain.forwarding import decode_forwarded
from stream_app.pipeline import Pipeline
from stream_app.runtime.state_store import PartitionStore
from stream_app.settings import Settings, SettingsError
from tests.unit.test_pipeline_drops import FakeRecord, FakeTable

T0 = 1_795_305_600_000  # 2026-11-22T00:00:00Z
HOUR = 3_600_000
OFFER: dict[str, Any] = {
    "event_id": "e1",
    "offer_id": "o1",
    "customer_id": "c1",
    "channel": "email",
    "segment": "smb",
    "ts": T0,
}
PURCHASE: dict[str, Any] = {
    "event_id": "e2",
    "order_id": "r1",
    "customer_id": "c1",
    "ts": T0,
    "amount": 5,
}
OFFER_STRINGS = (
    "event_id",
    "offer_id",
    "customer_id",
    "channel",
    "segment",
    "campaign_id",
    "campaign_type",
    "product_line",
)
PURCHASE_STRINGS = ("event_id", "order_id", "customer_id", "offer_id", "product_line")


def raw(doc: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**doc, **changes}).encode()


def reason(parse: Any, message: bytes, latest_ts: int | None = None) -> str | None:
    try:
        parse(message, latest_ts)
    except InvalidEvent as error:
        return error.reason
    return None


def test_the_limit_is_256() -> None:
    assert MAX_VALUE_CHARS == 256


@pytest.mark.parametrize("name", OFFER_STRINGS)
def test_offer_values_of_256_characters_pass_and_257_are_too_long(name: str) -> None:
    assert reason(parse_offer, raw(OFFER, **{name: "x" * 256})) is None
    assert reason(parse_offer, raw(OFFER, **{name: "x" * 257})) == TOO_LONG


@pytest.mark.parametrize("name", PURCHASE_STRINGS)
def test_purchase_values_of_256_characters_pass_and_257_are_too_long(name: str) -> None:
    assert reason(parse_purchase, raw(PURCHASE, **{name: "x" * 256})) is None
    assert reason(parse_purchase, raw(PURCHASE, **{name: "x" * 257})) == TOO_LONG


def test_length_counts_characters_not_bytes() -> None:
    # 256 characters of 4 UTF-8 bytes each (1,024 bytes) are within the limit.
    wide = "\U0001f600" * 256
    assert len(wide.encode()) == 1_024
    parsed = parse_offer(raw(OFFER, segment=wide))
    assert parsed.segment == wide
    assert reason(parse_offer, raw(OFFER, segment=wide + "é")) == TOO_LONG
    # Escaped in JSON (\ud83d\ude00 per character), still 256 characters.
    assert json.dumps({"s": wide}).count("\\u") == 512
    assert reason(parse_purchase, json.dumps({**PURCHASE, "order_id": wide}).encode()) is None


def test_a_too_long_value_says_which_field_and_how_long() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_offer(raw(OFFER, channel="c" * 300))
    assert caught.value.detail == "channel has 300 characters, more than 256"


@pytest.mark.parametrize("parse, doc", [(parse_offer, OFFER), (parse_purchase, PURCHASE)])
def test_ts_up_to_the_latest_accepted_passes_one_ms_beyond_is_future(
    parse: Any, doc: dict[str, Any]
) -> None:
    now_ms = T0 - HOUR
    latest = now_ms + HOUR  # the wall clock + UPSELL_MAX_FUTURE of 1h
    assert reason(parse, raw(doc, ts=T0), latest) is None  # exactly now + max future
    assert reason(parse, raw(doc, ts=T0 + 1), latest) == FUTURE_TS
    assert reason(parse, raw(doc, ts="2026-11-22T00:00:00Z"), latest) is None
    assert reason(parse, raw(doc, ts="2026-11-22T00:00:00.001Z"), latest) == FUTURE_TS
    assert reason(parse, raw(doc, ts="2026-11-22T01:00:00.001+01:00"), latest) == FUTURE_TS
    # Off: any ts within years 1-9999.
    assert reason(parse, raw(doc, ts="9999-12-31T23:59:59.999Z"), None) is None


def test_future_ts_detail_names_both_times() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_offer(raw(OFFER, ts=T0 + 1), T0)
    assert caught.value.detail == (
        "ts 2026-11-22T00:00:00.001Z is after "
        "2026-11-22T00:00:00.000Z, the wall clock + "
        "UPSELL_MAX_FUTURE"
    )


# -- the setting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, HOUR),
        ("", HOUR),
        ("off", None),
        ("OFF", None),
        ("0s", 0),
        ("90m", 90 * 60_000),
        ("2d", 2 * 86_400_000),
    ],
)
def test_max_future_setting(value: str | None, expected: int | None) -> None:
    env = {} if value is None else {"UPSELL_MAX_FUTURE": value}
    assert Settings.from_env(env).max_future_ms == expected


@pytest.mark.parametrize("value", ["1", "-1h", "soon", "1.5h", "on"])
def test_a_malformed_max_future_is_one_line_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"UPSELL_MAX_FUTURE": value})
    message = str(caught.value)
    assert message.startswith("UPSELL_MAX_FUTURE: ") and "\n" not in message
    assert message.endswith("(or off)")


# -- through the validating stage -------------------------------------------------------


def validated(settings: Settings, wall_clock_ms: int, *tss: int) -> list[tuple[str, str]]:
    """(event_id, outcome) of offers at `tss` validated at that wall clock: "valid" or
    the dead-letter reason, checked against the reject counted downstream."""
    pipeline = Pipeline(settings, PartitionStore(FakeTable()), PartitionStore(FakeTable()))
    records = [
        FakeRecord(n, b"c1", raw(OFFER, event_id=f"e{n}", ts=ts)) for n, ts in enumerate(tss)
    ]
    outputs = pipeline.validate(
        {(settings.topic_offers, 0): records}, wall_clock=wall_clock_ms / 1000
    )
    dead = {
        int((dict(o.headers or [])["source_offset"]).decode()): dict(o.headers or [])[
            "reason"
        ].decode()
        for o in outputs
        if o.topic == settings.topic_deadletter
    }
    forwarded = [
        decode_forwarded(o.value)
        for o in outputs
        if o.topic == settings.topic_events and o.value is not None
    ]
    outcomes = []
    for item in forwarded:
        if item.is_tick:
            continue
        if item.event is None:
            assert dead[item.source_offset] == item.reject_reason
            outcomes.append((f"e{item.source_offset}", f"{item.reject_reason}"))
        else:
            outcomes.append((item.event.event_id, "valid"))
    return sorted(outcomes)


def test_the_validating_stage_rejects_what_lies_beyond_its_wall_clock() -> None:
    settings = Settings(partitions=1)
    assert validated(settings, T0, T0, T0 + HOUR, T0 + HOUR + 1, T0 + 30 * 86_400_000) == [
        ("e0", "valid"),
        ("e1", "valid"),
        ("e2", FUTURE_TS),
        ("e3", FUTURE_TS),
    ]


def test_the_validating_stage_with_max_future_off_takes_any_ts() -> None:
    settings = Settings(partitions=1, max_future_ms=None)
    assert validated(settings, T0, T0, T0 + 30 * 86_400_000) == [("e0", "valid"), ("e1", "valid")]
