"""The two input events, their validation, and the reasons a message is rejected.

This module is the one description of the event schema: the worker, the tests and the
simulator's checks all read field names and rules from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import orjson

from stream_app._engine import Accepted, accept_batch, accept_offer, accept_purchase, accepted_of
from stream_app.domain.immutable import immutable
from stream_app.domain.windows import EPOCH, FIRST_TS_MS, LAST_TS_MS, rfc3339

_T = TypeVar("_T")

# Reasons, in the order they are checked: a message is rejected for the first that applies.
NOT_JSON: Final = "not_json"
NOT_OBJECT: Final = "not_object"
MISSING_FIELD: Final = "missing_field"
WRONG_TYPE: Final = "wrong_type"
NEGATIVE_AMOUNT: Final = "negative_amount"
BAD_TS: Final = "bad_ts"
TOO_LONG: Final = "too_long"
FUTURE_TS: Final = "future_ts"
REJECT_REASONS: Final = (
    NOT_JSON,
    NOT_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    TOO_LONG,
    NEGATIVE_AMOUNT,
    BAD_TS,
    FUTURE_TS,
)

# The longest identifier or dimension value accepted, in characters (not bytes).
MAX_VALUE_CHARS: Final = 256

# Amounts are kept as integer micro-units so that sums are exact and add up across workers.
MICROS_PER_UNIT: Final = 1_000_000
# Beyond this an amount loses cents in a float; no real order is that large.
_MAX_NUMBER: Final = 1e15

_ONE_MS: Final = timedelta(milliseconds=1)


class InvalidEvent(ValueError):
    """A message that cannot be accepted; `reason` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@immutable
class Offer:
    """An upsell offer presented to a customer."""

    event_id: str
    offer_id: str
    customer_id: str
    channel: str
    segment: str
    ts: int
    campaign_id: str | None = None
    campaign_type: str | None = None
    product_line: str | None = None
    loyalty_member: bool | None = None
    offered_price: float | None = None


@immutable
class Purchase:
    """A purchase; `offer_id` names the offer it accepts when the storefront knows it."""

    event_id: str
    order_id: str
    customer_id: str
    ts: int
    amount_micros: int
    offer_id: str | None = None
    is_upsell: bool = False
    product_line: str | None = None
    loyalty_member: bool | None = None

    @property
    def is_last_touch(self) -> bool:
        """Converts by last touch: no offer named, but marked as an upsell."""
        return self.offer_id is None and self.is_upsell


Event = Offer | Purchase


def parse_offer(raw: bytes | None, latest_ts: int | None = None) -> Offer:
    """Validate one message of the offers topic; raises InvalidEvent.

    `latest_ts` is the largest ts accepted (the wall clock + UPSELL_MAX_FUTURE, given by
    the caller: validation reads no clock); None accepts any. A message valid beyond doubt
    is accepted by the compiled core (engine/src/parse.rs); every other one goes through
    `check_offer`, whose rules decide each rejection's reason and detail.
    """
    if raw is not None:
        accepted = accept_offer(raw, latest_ts)
        if accepted is not None:
            return accepted
    return check_offer(raw, latest_ts)


def parse_purchase(raw: bytes | None, latest_ts: int | None = None) -> Purchase:
    """Validate one message of the purchases topic; raises InvalidEvent (see parse_offer)."""
    if raw is not None:
        accepted = accept_purchase(raw, latest_ts)
        if accepted is not None:
            return accepted
    return check_purchase(raw, latest_ts)


def validate_batch(
    values: Sequence[bytes | None], offers: bool, latest_ts: int | None, partitions: int
) -> list[Accepted | InvalidEvent]:
    """Validate a fetched batch of one input topic (`offers`, else purchases) in one call:
    per value, its accepted event (compiled, with its customer's partition among
    `partitions`, and encoded for the internal topic by `Accepted.item`) or the
    InvalidEvent that rejects it (see parse_offer)."""
    outcomes: list[Any] = accept_batch(list(values), offers, latest_ts, partitions)
    check = check_offer if offers else check_purchase
    for index, outcome in enumerate(outcomes):
        if outcome is None:
            try:
                outcomes[index] = accepted_of(check(values[index], latest_ts), partitions)
            except InvalidEvent as error:
                outcomes[index] = error
    return outcomes


def check_offer(raw: bytes | None, latest_ts: int | None = None) -> Offer:
    """The rules of an offer, every rejection with its reason (see parse_offer)."""
    fields = _load_object(raw)
    return Offer(
        event_id=_required_str(fields, "event_id"),
        offer_id=_required_str(fields, "offer_id"),
        customer_id=_required_str(fields, "customer_id"),
        channel=_required_str(fields, "channel"),
        segment=_required_str(fields, "segment"),
        ts=_required_ts(fields, latest_ts),
        campaign_id=_optional(fields, "campaign_id", _as_str),
        campaign_type=_optional(fields, "campaign_type", _as_str),
        product_line=_optional(fields, "product_line", _as_str),
        loyalty_member=_optional(fields, "loyalty_member", _as_bool),
        offered_price=_optional_non_negative(fields, "offered_price"),
    )


def check_purchase(raw: bytes | None, latest_ts: int | None = None) -> Purchase:
    """The rules of a purchase, every rejection with its reason (see parse_offer)."""
    fields = _load_object(raw)
    event_id = _required_str(fields, "event_id")
    order_id = _required_str(fields, "order_id")
    customer_id = _required_str(fields, "customer_id")
    _require_present(fields, "ts")
    _require_present(fields, "amount")
    amount = _as_number(fields["amount"], "amount")
    offer_id = _optional(fields, "offer_id", _as_str)
    is_upsell = _optional(fields, "is_upsell", _as_bool)
    product_line = _optional(fields, "product_line", _as_str)
    loyalty_member = _optional(fields, "loyalty_member", _as_bool)
    if amount < 0:
        raise InvalidEvent(NEGATIVE_AMOUNT, f"amount is {amount}")
    return Purchase(
        event_id=event_id,
        order_id=order_id,
        customer_id=customer_id,
        ts=_required_ts(fields, latest_ts),
        amount_micros=round(amount * MICROS_PER_UNIT),
        offer_id=offer_id,
        is_upsell=(offer_id is not None) if is_upsell is None else is_upsell,
        product_line=product_line,
        loyalty_member=loyalty_member,
    )


def parse_ts(value: object) -> int:
    """Event time in epoch milliseconds from an RFC 3339 string with offset or integer ms."""
    if isinstance(value, bool):
        raise InvalidEvent(WRONG_TYPE, "ts is a boolean")
    if isinstance(value, int):
        if not FIRST_TS_MS <= value <= LAST_TS_MS:
            raise InvalidEvent(BAD_TS, f"ts {value} is outside years 1-9999")
        return value
    if not isinstance(value, str):
        raise InvalidEvent(WRONG_TYPE, f"ts is a {type(value).__name__}")
    return _parse_rfc3339_ms(value)


def _parse_rfc3339_ms(text: str) -> int:
    # fromisoformat alone also takes dates without time or offset, which RFC 3339 forbids.
    if len(text) < 20 or text[10] not in "Tt ":
        raise InvalidEvent(BAD_TS, f"ts {text[:40]!r} is not an RFC 3339 date-time")
    try:
        moment = datetime.fromisoformat(text.upper() if text.endswith("z") else text)
    except ValueError:
        raise InvalidEvent(BAD_TS, f"ts {text[:40]!r} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise InvalidEvent(BAD_TS, f"ts {text[:40]!r} has no UTC offset")
    # Integer arithmetic on timedelta keeps every millisecond exact (sub-ms digits truncate).
    ms = (moment - EPOCH) // _ONE_MS
    # An offset can carry a local year 1 or 9999 outside those years in UTC.
    if not FIRST_TS_MS <= ms <= LAST_TS_MS:
        raise InvalidEvent(BAD_TS, f"ts {text[:40]!r} is outside years 1-9999 in UTC")
    return ms


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# orjson reads an integer beyond 64 bits as a float where the standard library keeps it
# exact, and a field holding one would then be rejected for another reason. Such a float
# is at least 2**63 in magnitude; a document with a float that large takes the standard
# library's way.
_LARGEST_EXACT: Final = 9.2e18


def _load_object(raw: bytes | None) -> Mapping[str, Any]:
    if raw is None:
        raise InvalidEvent(NOT_JSON, "the message has no value")
    document = _decode(raw)
    if not isinstance(document, dict):
        raise InvalidEvent(NOT_OBJECT, f"the JSON value is a {type(document).__name__}")
    return document


def _decode(raw: bytes) -> Any:
    # orjson is several times faster. What it refuses (invalid UTF-8, NaN, lone surrogates,
    # deep nesting, 1e400), and any other value than an object, goes to the standard
    # library, whose verdict and messages decide.
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if isinstance(document, dict):
            for value in document.values():
                if type(value) is float and not -_LARGEST_EXACT < value < _LARGEST_EXACT:
                    break
            else:
                return document
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as error:
        raise InvalidEvent(NOT_JSON, f"not UTF-8 at byte {error.start}") from None
    except RecursionError:
        raise InvalidEvent(NOT_JSON, "nested too deeply") from None
    except ValueError as error:
        raise InvalidEvent(NOT_JSON, str(error)[:200]) from None


def _require_present(fields: Mapping[str, Any], name: str) -> None:
    if fields.get(name) is None:
        raise InvalidEvent(MISSING_FIELD, f"{name} is missing")


def _required_str(fields: Mapping[str, Any], name: str) -> str:
    _require_present(fields, name)
    value = _as_str(fields[name], name)
    if not value:
        raise InvalidEvent(MISSING_FIELD, f"{name} is empty")
    return value


def _required_ts(fields: Mapping[str, Any], latest_ts: int | None) -> int:
    _require_present(fields, "ts")
    ts = parse_ts(fields["ts"])
    if latest_ts is not None and ts > latest_ts:
        raise InvalidEvent(
            FUTURE_TS,
            f"ts {rfc3339(ts)} is after {rfc3339(latest_ts)}, the wall clock + UPSELL_MAX_FUTURE",
        )
    return ts


def _optional(
    fields: Mapping[str, Any], name: str, convert: Callable[[object, str], _T]
) -> _T | None:
    value = fields.get(name)
    return None if value is None else convert(value, name)


def _optional_non_negative(fields: Mapping[str, Any], name: str) -> float | None:
    value = _optional(fields, name, _as_number)
    if value is not None and value < 0:
        raise InvalidEvent(NEGATIVE_AMOUNT, f"{name} is {value}")
    return value


def _as_str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(WRONG_TYPE, f"{name} must be a string, not {type(value).__name__}")
    if len(value) > MAX_VALUE_CHARS:
        # Every string field is an identifier or a dimension value: a key, a label or
        # part of a topic key downstream.
        raise InvalidEvent(
            TOO_LONG, f"{name} has {len(value)} characters, more than {MAX_VALUE_CHARS}"
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # JSON can escape a lone surrogate ("\ud800"); such a string is no Unicode text
            # and would fail later as a Kafka key, a label or a topic record.
            raise InvalidEvent(WRONG_TYPE, f"{name} holds a lone surrogate, not text") from None
    return value


def _as_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidEvent(WRONG_TYPE, f"{name} must be true or false, not {type(value).__name__}")
    return value


def _as_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(WRONG_TYPE, f"{name} must be a number, not {type(value).__name__}")
    if not -_MAX_NUMBER < value < _MAX_NUMBER:  # also false for NaN
        raise InvalidEvent(WRONG_TYPE, f"{name} is not a finite number below 1e15")
    return float(value)
