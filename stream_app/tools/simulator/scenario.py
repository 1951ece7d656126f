"""The simulated world and its event stream: pure, deterministic for a seed, no Kafka.

The world
---------
A customer base of `customers` customers, each with a fixed segment (consumer 45 %, smb
20 %, loyalty_gold 20 %, mid_market 10 %, enterprise 5 %), a fixed loyalty-programme flag
(always for loyalty_gold, 5-30 % for the others) and an activity weight (log-normal), so
that some customers are offered and buy far more often than others.

Offers are presented one every `offer_gap_ms` of event time (jittered inside that slot, so
offer times strictly increase) to a customer drawn by activity, in a channel drawn from
the customer's segment's channel mix (enterprise buyers are reached by email and the call
centre, consumers by push and in-app messages, ...). Every (channel, segment) pair has a
positive share, so each customer gets several offers over time in different channels.

The true conversion rate of an offer is CHANNEL_BASE_RATE[channel] x
SEGMENT_MULTIPLIER[segment] (between 0.032 and 0.375); with a configured drop, offers of
the dropped channel from offer number `after_offers` on (0-based) convert at that rate x
`factor`, up to offer `until_offers` (excluded) when the drop has an end. A converting
offer is bought once, 2 s plus an exponential delay later (most
within a few minutes, a tail of tens of minutes, never more than `max_delay_ms`, default
30 min, so always inside the default 7-day attribution window). About 70 % of those
purchases name the offer (`offer_id`); the others are last-touch purchases (no offer_id,
`"is_upsell": true` -- the contract's default for is_upsell without an offer_id is false,
so it must be explicit). A last-touch purchase is only generated when the offer is
certain to be the customer's most recent unconverted offer at the purchase's ts: no other
offer of the customer has a ts in [offer.ts, purchase.ts], and no last-touch purchase of
the customer at or after offer.ts came first. Otherwise the purchase names the offer.

Besides, customers buy things that are not upsells: a Poisson number of background
purchases per offer slot (mean `background_per_offer`, default 2), with `"is_upsell":
false` and no offer_id, so they never convert anything. Prices have cents (9.99 to
499.00, mostly ending in .99/.49/.95/.00); a converting purchase costs the offered price,
sometimes with an accessory added.

The stream closes with background purchases only, until event time has passed the last
last-touch purchase's ts + `settle_ms`, and 256 more: the contract decides a last-touch
purchase once stream time passes its ts + UPSELL_GRACE, so without them a worker with that
grace (the command passes it) would leave the last ones undecided and its counters would
never reach the truth.

Half the events carry ts as RFC 3339 UTC with milliseconds, the other half as epoch
milliseconds; optional fields are left out now and then.

Noise, drawn from its own random stream so that it never changes the world:
- duplicates: with probability `duplicates` a valid event is sent again, same key and
  bytes, 1 to 4 messages after the original;
- malformed: with probability `malformed` per valid event, a message with exactly one
  defect follows it on the same topic, with fresh ids (it never collides with a valid
  event_id and never names an offer): invalid UTF-8 or truncated JSON (not_json), a JSON
  array or a double-encoded JSON string (not_object), a required field removed
  (missing_field), a required string as a number or a purchase's amount as a string
  (wrong_type), a negative purchase amount (negative_amount), an unparseable ts (bad_ts).

The truth also holds the KPI counters, from the generator's own decisions: offers,
conversions and revenue by the offer's "campaign_type|product_line", and purchases and
their amounts by "kind|loyalty|product_line" (kind upsell for a converting purchase, other
for a background one; loyalty member, non_member or unknown when the field is left out; the
purchase's own product_line), a value left out being "__none__".

Messages come out in event-time order (a duplicate trails its original by a few
messages); pending purchases wait in a heap, so memory stays flat however many offers.
The ground truth is complete once the iterator is exhausted.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any, Final, Literal, TypeVar

from stream_app.domain.events import (
    BAD_TS,
    MISSING_FIELD,
    NEGATIVE_AMOUNT,
    NOT_JSON,
    NOT_OBJECT,
    REJECT_REASONS,
    WRONG_TYPE,
)
from stream_app.domain.views import NONE, loyalty
from stream_app.domain.windows import LAST_TS_MS

TopicKind = Literal["offers", "purchases"]
_T = TypeVar("_T")

CHANNELS: Final = ("email", "sms", "push", "in_app", "web", "call_center")
SEGMENTS: Final = ("smb", "mid_market", "enterprise", "consumer", "loyalty_gold")

CHANNEL_BASE_RATE: Final[Mapping[str, float]] = {
    "email": 0.06,
    "sms": 0.04,
    "push": 0.05,
    "in_app": 0.18,
    "web": 0.10,
    "call_center": 0.25,
}
SEGMENT_MULTIPLIER: Final[Mapping[str, float]] = {
    "smb": 1.0,
    "mid_market": 1.15,
    "enterprise": 0.8,
    "consumer": 0.9,
    "loyalty_gold": 1.5,
}
SEGMENT_SHARE: Final[Mapping[str, float]] = {
    "smb": 0.20,
    "mid_market": 0.10,
    "enterprise": 0.05,
    "consumer": 0.45,
    "loyalty_gold": 0.20,
}
LOYALTY_SHARE: Final[Mapping[str, float]] = {
    "smb": 0.15,
    "mid_market": 0.10,
    "enterprise": 0.05,
    "consumer": 0.30,
    "loyalty_gold": 1.0,
}
# Weights in CHANNELS order.
CHANNEL_MIX: Final[Mapping[str, tuple[float, ...]]] = {
    "smb": (0.30, 0.10, 0.05, 0.15, 0.25, 0.15),
    "mid_market": (0.30, 0.05, 0.05, 0.15, 0.20, 0.25),
    "enterprise": (0.30, 0.02, 0.03, 0.10, 0.20, 0.35),
    "consumer": (0.25, 0.15, 0.20, 0.20, 0.15, 0.05),
    "loyalty_gold": (0.20, 0.10, 0.20, 0.30, 0.10, 0.10),
}

OFFER_PRODUCT_LINES: Final = (
    "premium_support",
    "device_protection",
    "cloud_storage",
    "data_plan",
    "streaming_bundle",
    "extended_warranty",
)
# What customers buy without an offer includes lines nobody upsells.
PURCHASE_PRODUCT_LINES: Final = (*OFFER_PRODUCT_LINES, "accessories", "core_subscription")
PRICE_RANGE_DOLLARS: Final[Mapping[str, tuple[int, int]]] = {
    "premium_support": (19, 149),
    "device_protection": (9, 89),
    "cloud_storage": (9, 59),
    "data_plan": (14, 79),
    "streaming_bundle": (9, 39),
    "extended_warranty": (49, 499),
    "accessories": (9, 199),
    "core_subscription": (19, 99),
}
PRICE_ENDINGS: Final = (99, 99, 99, 49, 95, 0)
MIN_PRICE_CENTS: Final = 999
MAX_PRICE_CENTS: Final = 49_900
GENERAL_CAMPAIGN_TYPES: Final = ("limited_time", "cross_sell", "bundle", "win_back")
SETTLE_EXTRA_PURCHASES: Final = 256

EXPLICIT_SHARE: Final = 0.7
MIN_DELAY_MS: Final = 2_000
DEFAULT_MAX_DELAY_MS: Final = 30 * 60_000
# Two kinds of buyers: impulse (minutes) and deliberate (tens of minutes).
_FAST_SHARE: Final = 0.6
_FAST_MEAN_MS: Final = 90_000
_SLOW_MEAN_MS: Final = 600_000

OFFER_REQUIRED: Final = ("event_id", "offer_id", "customer_id", "channel", "segment", "ts")
OFFER_REQUIRED_STRINGS: Final = ("event_id", "offer_id", "customer_id", "channel", "segment")
PURCHASE_REQUIRED: Final = ("event_id", "order_id", "customer_id", "ts", "amount")
PURCHASE_REQUIRED_STRINGS: Final = ("event_id", "order_id", "customer_id")
OFFER_REJECT_REASONS: Final = (NOT_JSON, NOT_OBJECT, MISSING_FIELD, WRONG_TYPE, BAD_TS)
# The defects it makes; never too_long or future_ts, limits of the worker's settings.
PURCHASE_REJECT_REASONS: Final = (
    NOT_JSON,
    NOT_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    NEGATIVE_AMOUNT,
    BAD_TS,
)
BAD_TS_TEXTS: Final = (
    "yesterday",
    "2026-11-22",
    "22/11/2026 10:15",
    "2026-11-22 10:15:00",
    "2026-11-22T25:61:00Z",
)
# Valid ids number their events below this bit, malformed ones above: they cannot collide.
_MALFORMED_ID_BIT: Final = 1 << 47
_NODE_MASK: Final = (1 << 48) - 1
_ID_MULTIPLIER: Final = 0x5DEECE66D  # odd, so multiplying modulo 2**48 is a bijection
# Version 4 in bits 76-79, variant 0b10 in bits 62-63 (RFC 9562).
_UUID_CLEAR: Final = ~((0xF << 76) | (0x3 << 62))
_UUID_SET: Final = (0x4 << 76) | (0x2 << 62)
_NEVER: Final = -(1 << 62)
UPSELL_KIND: Final = "upsell"
OTHER_KIND: Final = "other"


class ScenarioError(ValueError):
    """A scenario that cannot be simulated; the message is one line for the user."""


def pair_key(channel: str, segment: str) -> str:
    return f"{channel}|{segment}"


def true_rate(channel: str, segment: str) -> float:
    return CHANNEL_BASE_RATE[channel] * SEGMENT_MULTIPLIER[segment]


def format_ts_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: 2026-11-22T10:15:00.123Z."""
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


@dataclass(frozen=True)
class RateDrop:
    """From offer number `after_offers` (0-based) on, `channel` converts at rate x factor;
    from offer `until_offers` on (when given) at its true rate again: the rate recovers."""

    channel: str
    after_offers: int
    factor: float
    until_offers: int | None = None

    def applies_to(self, index: int, channel: str) -> bool:
        """Whether offer number `index` in `channel` converts at the dropped rate."""
        return (
            channel == self.channel
            and index >= self.after_offers
            and (self.until_offers is None or index < self.until_offers)
        )

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ScenarioError(
                f"drop channel {self.channel!r} is not one of {', '.join(CHANNELS)}"
            )
        if self.after_offers < 0:
            raise ScenarioError(f"drop after {self.after_offers} offers: must be 0 or more")
        if self.until_offers is not None and self.until_offers <= self.after_offers:
            raise ScenarioError(
                f"drop until offer {self.until_offers}: must come after offer {self.after_offers}"
            )
        if not math.isfinite(self.factor) or self.factor < 0:
            raise ScenarioError(f"drop factor {self.factor} must be a number >= 0")
        highest = max(true_rate(self.channel, segment) for segment in SEGMENTS)
        if highest * self.factor > 1:
            raise ScenarioError(
                f"drop factor {self.factor} would push {self.channel}'s rate "
                f"{highest:.3f} above 1 (at most {1 / highest:.2f})"
            )


@dataclass(frozen=True)
class ScenarioConfig:
    seed: int = 1
    offers: int = 10_000
    customers: int = 5_000
    duplicates: float = 0.01
    malformed: float = 0.005
    start_ms: int = 1_795_341_600_000  # 2026-11-22T10:00:00Z
    offer_gap_ms: int = 1_000
    drop: RateDrop | None = None
    background_per_offer: float = 2.0
    max_delay_ms: int = DEFAULT_MAX_DELAY_MS
    # The grace of the worker that will read the stream: see _settle.
    settle_ms: int = 60_000
    offers_topic: str = "upsell.offers"
    purchases_topic: str = "upsell.purchases"

    def __post_init__(self) -> None:
        if self.offers < 0:
            raise ScenarioError(f"number of offers {self.offers} must be 0 or more")
        if self.customers < 1:
            raise ScenarioError(f"number of customers {self.customers} must be 1 or more")
        for name in ("duplicates", "malformed"):
            share = getattr(self, name)
            if not 0 <= share <= 1:  # also false for NaN
                raise ScenarioError(f"{name} share {share} must be between 0 and 1")
        if self.offer_gap_ms < 0:
            raise ScenarioError(f"time between offers {self.offer_gap_ms} ms must be >= 0")
        if not 0 <= self.background_per_offer <= 100:
            raise ScenarioError(
                f"background purchases per offer {self.background_per_offer} must be 0 to 100"
            )
        if self.max_delay_ms < 0:
            raise ScenarioError(f"longest conversion delay {self.max_delay_ms} ms must be >= 0")
        if self.settle_ms < 0:
            raise ScenarioError(f"settle time {self.settle_ms} ms must be >= 0")
        last_ms = (
            self.start_ms
            + self.offers * self.offer_gap_ms
            + self.max_delay_ms
            + self.settle_ms
            + 86_400_000
        )
        if self.start_ms < 0 or last_ms > LAST_TS_MS:
            raise ScenarioError("event times must fall between 1970 and 9999")
        if self.offers_topic == self.purchases_topic:
            raise ScenarioError("the offers and purchases topics must differ")


def expected_messages_per_offer(config: ScenarioConfig) -> float:
    """Messages the stream holds per offer on average, for sizing a run to a duration."""
    mean_rate = 0.0
    for segment, share in SEGMENT_SHARE.items():
        weights = CHANNEL_MIX[segment]
        total = sum(weights)
        mean_rate += share * sum(
            weight / total * true_rate(channel, segment)
            for channel, weight in zip(CHANNELS, weights, strict=True)
        )
    valid = 1 + config.background_per_offer + mean_rate
    return valid * (1 + config.duplicates + config.malformed)


@dataclass(frozen=True, slots=True)
class SimMessage:
    topic_kind: TopicKind
    key: bytes | None
    value: bytes


def _counter() -> Counter[str]:
    return Counter()


@dataclass
class GroundTruth:
    """What was generated; revenue is held in integer cents so that it stays exact."""

    seed: int
    offers_topic: str
    purchases_topic: str
    drop: RateDrop | None = None
    offers_presented: Counter[str] = field(default_factory=_counter)
    conversions: Counter[str] = field(default_factory=_counter)
    revenue_cents: Counter[str] = field(default_factory=_counter)
    explicit_conversions: int = 0
    last_touch_conversions: int = 0
    background_purchases: int = 0
    settle_purchases: int = 0
    purchases: int = 0
    events: int = 0
    messages_sent: Counter[str] = field(default_factory=_counter)
    duplicates: Counter[str] = field(default_factory=_counter)
    rejected: dict[str, Counter[str]] = field(default_factory=dict)
    first_ts: int | None = None
    last_ts: int | None = None
    drop_from_ts: int | None = None
    drop_until_ts: int | None = None
    drop_offers: Counter[str] = field(default_factory=_counter)
    drop_conversions: Counter[str] = field(default_factory=_counter)
    # KPI counters: "campaign_type|product_line" of the offer ...
    campaign_offers_presented: Counter[str] = field(default_factory=_counter)
    campaign_conversions: Counter[str] = field(default_factory=_counter)
    campaign_revenue_cents: Counter[str] = field(default_factory=_counter)
    # ... and "kind|loyalty|product_line" of the purchase.
    purchases_by_kind: Counter[str] = field(default_factory=_counter)
    purchase_amount_cents: Counter[str] = field(default_factory=_counter)
    complete: bool = False

    @property
    def topics(self) -> tuple[str, str]:
        return (self.offers_topic, self.purchases_topic)

    @property
    def offers_total(self) -> int:
        return sum(self.offers_presented.values())

    def topic(self, kind: TopicKind) -> str:
        return self.offers_topic if kind == "offers" else self.purchases_topic

    def as_json(self) -> dict[str, Any]:
        pairs = [pair_key(c, s) for c in CHANNELS for s in SEGMENTS]
        truth: dict[str, Any] = {
            "seed": self.seed,
            "complete": self.complete,
            "true_rates": {key: round(true_rate(*key.split("|")), 6) for key in pairs},
            # Only pairs that occurred: a counter that never moved is never exported either.
            "offers_presented": _nonzero(self.offers_presented, pairs),
            "conversions": _nonzero(self.conversions, pairs),
            "revenue": {
                key: _cents_to_units(cents)
                for key, cents in _nonzero(self.revenue_cents, pairs).items()
            },
            "offers": self.offers_total,
            "conversions_explicit": self.explicit_conversions,
            "conversions_last_touch": self.last_touch_conversions,
            "purchases": self.purchases,
            "purchases_background": self.background_purchases,
            "purchases_settle": self.settle_purchases,
            "events": self.events,
            "messages_sent": {topic: self.messages_sent[topic] for topic in self.topics},
            "duplicates": {topic: self.duplicates[topic] for topic in self.topics},
            "rejected": {
                topic: {
                    reason: self.rejected.get(topic, Counter())[reason] for reason in REJECT_REASONS
                }
                for topic in self.topics
            },
            # `purchases` above is the plain count; these are keyed like the KPI counters.
            "campaign_offers_presented": _sorted_nonzero(self.campaign_offers_presented),
            "campaign_conversions": _sorted_nonzero(self.campaign_conversions),
            "campaign_revenue": {
                key: _cents_to_units(cents)
                for key, cents in _sorted_nonzero(self.campaign_revenue_cents).items()
            },
            "purchases_by_kind": _sorted_nonzero(self.purchases_by_kind),
            "purchase_amount": {
                key: _cents_to_units(cents)
                for key, cents in _sorted_nonzero(self.purchase_amount_cents).items()
            },
            "first_ts": None if self.first_ts is None else format_ts_ms(self.first_ts),
            "last_ts": None if self.last_ts is None else format_ts_ms(self.last_ts),
        }
        if self.drop is not None:
            drop = self.drop
            dropped = [key for key in pairs if key.startswith(f"{drop.channel}|")]
            truth["drop"] = {
                "channel": drop.channel,
                "after_offers": drop.after_offers,
                "factor": drop.factor,
                "until_offers": drop.until_offers,
                "from_ts": None if self.drop_from_ts is None else format_ts_ms(self.drop_from_ts),
                "until_ts": (
                    None if self.drop_until_ts is None else format_ts_ms(self.drop_until_ts)
                ),
                "rates_after": {
                    key: round(true_rate(*key.split("|")) * drop.factor, 6) for key in dropped
                },
                "offers_after": _nonzero(self.drop_offers, dropped),
                "conversions_after": _nonzero(self.drop_conversions, dropped),
            }
        return truth


def _nonzero(counts: Counter[str], order: Sequence[str]) -> dict[str, int]:
    return {key: counts[key] for key in order if counts[key]}


def _sorted_nonzero(counts: Counter[str]) -> dict[str, int]:
    return {key: counts[key] for key in sorted(counts) if counts[key]}


def _cents_to_units(cents: int) -> float:
    # A correctly rounded quotient of whole cents prints with at most two decimals.
    return cents / 100


@dataclass(slots=True)
class _PlannedConversion:
    offer_id: str
    customer: int
    pair: str
    campaign: str  # "campaign_type|product_line" as the offer carries them
    offer_ts: int
    product_line: str | None
    price_cents: int | None
    wants_last_touch: bool
    after_drop: bool


_Pending = _PlannedConversion | int  # an int is the customer of a background purchase


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(accumulate(weights))


def _pick(rng: random.Random, cumulative: Sequence[float]) -> int:
    return bisect_right(cumulative, rng.random() * cumulative[-1])


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))


def _encode(fields: object) -> bytes:
    return _ENCODER.encode(fields).encode("utf-8")


def _choice(rng: random.Random, options: Sequence[_T]) -> _T:
    # random.choice draws bits until they fit; one float is several times cheaper here.
    return options[int(rng.random() * len(options))]


class Simulation(Iterator[SimMessage]):
    """The message stream of one scenario; `truth` fills in as it is consumed."""

    def __init__(self, config: ScenarioConfig) -> None:
        self.config = config
        self.truth = GroundTruth(
            seed=config.seed,
            offers_topic=config.offers_topic,
            purchases_topic=config.purchases_topic,
            drop=config.drop,
        )
        seed = config.seed
        self._rng = random.Random(f"world:{seed}")
        # Noise has its own stream so that duplicate and malformed shares never change
        # the world; ids depend on the start too, so that a rerun starting at another
        # time is not taken for a replay of the same events.
        self._noise = random.Random(f"noise:{seed}")
        self._id_rng = random.Random(f"ids:{seed}:{config.start_ms}")
        self._id_key = self._id_rng.getrandbits(48)
        self._valid_ids = 0
        self._malformed_ids = 0
        self._orders = 0
        self._ts_cache: tuple[int, str] = (-1, "")
        self._build_customers()
        self._channel_cum = {s: _cumulative(CHANNEL_MIX[s]) for s in SEGMENTS}
        self._pending: list[tuple[int, int, _Pending]] = []
        self._pending_seq = 0
        self._last_touch_max_ts: int | None = None
        self._outbox: list[SimMessage] = []
        self._pushed = 0
        self._dups: list[tuple[int, int, SimMessage]] = []
        self._stream = self._run()

    def __next__(self) -> SimMessage:
        return next(self._stream)

    # -- the world -------------------------------------------------------------------
    def _build_customers(self) -> None:
        rng = self._rng
        segment_cum = _cumulative([SEGMENT_SHARE[s] for s in SEGMENTS])
        n = self.config.customers
        self._cust_ids = [f"cust-{i + 1:07d}" for i in range(n)]
        self._cust_keys = [cid.encode("utf-8") for cid in self._cust_ids]
        self._cust_segment = [SEGMENTS[_pick(rng, segment_cum)] for _ in range(n)]
        self._cust_loyal = [rng.random() < LOYALTY_SHARE[s] for s in self._cust_segment]
        self._cust_cum = _cumulative([rng.lognormvariate(0.0, 0.8) for _ in range(n)])
        self._last_offer_id: list[str | None] = [None] * n
        self._last_offer_ts = [_NEVER] * n
        self._prev_offer_ts = [_NEVER] * n
        self._last_touch_ts = [_NEVER] * n

    def _run(self) -> Iterator[SimMessage]:
        config = self.config
        rng = self._rng
        gap = config.offer_gap_ms
        for index in range(config.offers):
            slot = config.start_ms + index * gap
            ts = slot + int(rng.random() * gap)
            # Offers go first on equal ts, so that a purchase is decided knowing every
            # offer at or before its ts.
            while self._pending and self._pending[0][0] < ts:
                self._emit_pending()
            self._offer(index, ts)
            slot_end = max(ts + 1, slot + gap)
            for _ in range(self._poisson(config.background_per_offer)):
                self._schedule(ts + int(rng.random() * (slot_end - ts)), self._pick_customer())
            yield from self._drain()
        while self._pending:
            self._emit_pending()
            yield from self._drain()
        yield from self._settle()
        while self._dups:
            self._append(heapq.heappop(self._dups)[2])
        yield from self._drain()
        self.truth.complete = True

    def _settle(self) -> Iterator[SimMessage]:
        """Background purchases until event time has passed the last last-touch purchase's
        ts + settle_ms, so that a worker with that grace decides every one of them."""
        last_touch = self._last_touch_max_ts
        if last_touch is None or self.truth.last_ts is None:
            return
        target = last_touch + self.config.settle_ms
        per_ms = self.config.background_per_offer / max(1, self.config.offer_gap_ms)
        mean_gap_ms = max(1.0, 1 / per_ms) if per_ms > 0 else 500.0
        ts, beyond = self.truth.last_ts, 0
        # Past the target, a few more so that every partition (hence every worker) sees
        # one: 256 leave 24 partitions each a miss chance of about 2e-5.
        while ts <= target or beyond < SETTLE_EXTRA_PURCHASES:
            ts += 1 + round(self._rng.expovariate(1 / mean_gap_ms))
            beyond += ts > target
            self._background(ts, self._pick_customer())
            self.truth.settle_purchases += 1
            yield from self._drain()

    def _offer(self, index: int, ts: int) -> None:
        rng, truth, drop = self._rng, self.truth, self.config.drop
        customer = self._pick_customer()
        segment = self._cust_segment[customer]
        channel = CHANNELS[_pick(rng, self._channel_cum[segment])]
        pair = pair_key(channel, segment)
        loyal = self._cust_loyal[customer]
        offer_id = self._new_id()
        product_line = _choice(rng, OFFER_PRODUCT_LINES)
        price = self._price(product_line)
        if loyal and rng.random() < 0.35:
            campaign_type = "loyalty_upgrade"
        elif channel == "email" and rng.random() < 0.6:
            campaign_type = "email_offer"
        else:
            campaign_type = _choice(rng, GENERAL_CAMPAIGN_TYPES)
        fields: dict[str, Any] = {
            "event_id": self._new_id(),
            "offer_id": offer_id,
            "customer_id": self._cust_ids[customer],
            "channel": channel,
            "segment": segment,
            "ts": self._ts_value(ts),
        }
        if rng.random() >= 0.03:
            wave = 1 + int(rng.random() * 3)
            fields["campaign_id"] = f"cmp-{campaign_type.replace('_', '-')}-{wave:02d}"
        sent_campaign_type: str | None = campaign_type if rng.random() >= 0.05 else None
        if sent_campaign_type is not None:
            fields["campaign_type"] = sent_campaign_type
        offered_line = product_line if rng.random() >= 0.03 else None
        if offered_line is not None:
            fields["product_line"] = offered_line
        if rng.random() >= 0.05:
            fields["loyalty_member"] = loyal
        offered_price = price if rng.random() >= 0.10 else None
        if offered_price is not None:
            fields["offered_price"] = _cents_to_units(offered_price)
        self._send_valid("offers", customer, fields, ts)
        truth.offers_presented[pair] += 1
        campaign = f"{sent_campaign_type or NONE}|{offered_line or NONE}"
        truth.campaign_offers_presented[campaign] += 1

        rate = true_rate(channel, segment)
        dropped = False
        if drop is not None:
            if index == drop.after_offers:
                truth.drop_from_ts = ts
            if index == drop.until_offers:
                truth.drop_until_ts = ts
            if drop.applies_to(index, channel):
                dropped = True
                rate *= drop.factor
                truth.drop_offers[pair] += 1
        if rng.random() < rate:
            plan = _PlannedConversion(
                offer_id=offer_id,
                customer=customer,
                pair=pair,
                campaign=campaign,
                offer_ts=ts,
                product_line=offered_line,
                price_cents=offered_price,
                wants_last_touch=rng.random() >= EXPLICIT_SHARE,
                after_drop=dropped,
            )
            self._schedule(ts + self._delay(), plan)
        self._prev_offer_ts[customer] = self._last_offer_ts[customer]
        self._last_offer_ts[customer] = ts
        self._last_offer_id[customer] = offer_id

    def _emit_pending(self) -> None:
        ts, _, item = heapq.heappop(self._pending)
        if isinstance(item, _PlannedConversion):
            self._conversion(ts, item)
        else:
            self._background(ts, item)

    def _conversion(self, ts: int, plan: _PlannedConversion) -> None:
        rng, truth = self._rng, self.truth
        customer = plan.customer
        last_touch = (
            plan.wants_last_touch
            and self._last_offer_id[customer] == plan.offer_id
            and self._prev_offer_ts[customer] < plan.offer_ts
            # Implied by the two checks above; kept so the guarantee does not rest on
            # that argument alone.
            and self._last_touch_ts[customer] < plan.offer_ts
        )
        product_line = plan.product_line or _choice(rng, OFFER_PRODUCT_LINES)
        amount = plan.price_cents if plan.price_cents is not None else self._price(product_line)
        if rng.random() < 0.2:
            amount += self._price("accessories")
        fields: dict[str, Any] = {
            "event_id": self._new_id(),
            "order_id": self._new_order_id(),
            "customer_id": self._cust_ids[customer],
        }
        if last_touch:
            if rng.random() < 0.25:
                fields["offer_id"] = None
            fields["is_upsell"] = True
            self._last_touch_ts[customer] = ts
            self._last_touch_max_ts = ts
            truth.last_touch_conversions += 1
        else:
            fields["offer_id"] = plan.offer_id
            if rng.random() < 0.5:
                fields["is_upsell"] = True
            truth.explicit_conversions += 1
        labels = self._purchase_tail(fields, customer, product_line, amount, ts)
        self._send_valid("purchases", customer, fields, ts)
        truth.purchases += 1
        truth.conversions[plan.pair] += 1
        truth.revenue_cents[plan.pair] += amount
        truth.campaign_conversions[plan.campaign] += 1
        truth.campaign_revenue_cents[plan.campaign] += amount
        truth.purchases_by_kind[f"{UPSELL_KIND}|{labels}"] += 1
        truth.purchase_amount_cents[f"{UPSELL_KIND}|{labels}"] += amount
        if plan.after_drop:
            truth.drop_conversions[plan.pair] += 1

    def _background(self, ts: int, customer: int) -> None:
        rng = self._rng
        product_line = _choice(rng, PURCHASE_PRODUCT_LINES)
        fields: dict[str, Any] = {
            "event_id": self._new_id(),
            "order_id": self._new_order_id(),
            "customer_id": self._cust_ids[customer],
            "is_upsell": False,
        }
        amount = self._price(product_line)
        if rng.random() < 0.15:
            amount += self._price(_choice(rng, PURCHASE_PRODUCT_LINES))
        labels = self._purchase_tail(fields, customer, product_line, amount, ts)
        self._send_valid("purchases", customer, fields, ts)
        truth = self.truth
        truth.purchases += 1
        truth.background_purchases += 1
        truth.purchases_by_kind[f"{OTHER_KIND}|{labels}"] += 1
        truth.purchase_amount_cents[f"{OTHER_KIND}|{labels}"] += amount

    def _purchase_tail(
        self, fields: dict[str, Any], customer: int, product_line: str, amount: int, ts: int
    ) -> str:
        """Fills in the rest of a purchase; returns its "loyalty|product_line" labels."""
        rng = self._rng
        sent_line: str | None = product_line if rng.random() >= 0.03 else None
        if sent_line is not None:
            fields["product_line"] = sent_line
        member: bool | None = self._cust_loyal[customer] if rng.random() >= 0.05 else None
        if member is not None:
            fields["loyalty_member"] = member
        fields["amount"] = _cents_to_units(amount)
        fields["currency"] = "USD"
        fields["ts"] = self._ts_value(ts)
        return f"{loyalty(member)}|{sent_line or NONE}"

    # -- drawing ---------------------------------------------------------------------
    def _pick_customer(self) -> int:
        return _pick(self._rng, self._cust_cum)

    def _price(self, product_line: str) -> int:
        low, high = PRICE_RANGE_DOLLARS[product_line]
        rng = self._rng
        dollars = low + int(rng.random() * (high - low + 1))
        cents = dollars * 100 + _choice(rng, PRICE_ENDINGS)
        return min(MAX_PRICE_CENTS, max(MIN_PRICE_CENTS, cents))

    def _delay(self) -> int:
        rng = self._rng
        mean = _FAST_MEAN_MS if rng.random() < _FAST_SHARE else _SLOW_MEAN_MS
        delay = MIN_DELAY_MS + round(rng.expovariate(1 / mean))
        return min(self.config.max_delay_ms, delay)

    def _poisson(self, mean: float) -> int:
        # Knuth's method: fine for the small means used here.
        limit, count, product = math.exp(-mean), 0, self._rng.random()
        while product > limit:
            count += 1
            product *= self._rng.random()
        return count

    def _ts_value(self, ts: int) -> str | int:
        if self._rng.random() < 0.5:
            return ts
        seconds, millis = divmod(ts, 1000)
        cached_seconds, prefix = self._ts_cache
        if cached_seconds != seconds:
            prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._ts_cache = (seconds, prefix)
        return f"{prefix}.{millis:03d}Z"

    def _new_id(self) -> str:
        self._valid_ids += 1
        return self._uuid(self._valid_ids, self._id_rng)

    def _new_malformed_id(self) -> str:
        self._malformed_ids += 1
        return self._uuid(_MALFORMED_ID_BIT | self._malformed_ids, self._noise)

    def _uuid(self, number: int, rng: random.Random) -> str:
        # Version-4 UUIDs whose node field (the low 48 bits, untouched by the version and
        # variant bits) is a bijection of the sequence number: unique by construction,
        # random-looking all the same. Formatted by hand: uuid.UUID is several times slower.
        node = ((number * _ID_MULTIPLIER) & _NODE_MASK) ^ self._id_key
        bits = (rng.getrandbits(80) << 48 | node) & _UUID_CLEAR | _UUID_SET
        h = f"{bits:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _new_order_id(self) -> str:
        self._orders += 1
        return f"ORD-{self._orders:09d}"

    # -- output ----------------------------------------------------------------------
    def _schedule(self, ts: int, item: _Pending) -> None:
        self._pending_seq += 1
        heapq.heappush(self._pending, (ts, self._pending_seq, item))

    def _send_valid(
        self, kind: TopicKind, customer: int, fields: Mapping[str, Any], ts: int
    ) -> None:
        truth, noise = self.truth, self._noise
        message = SimMessage(kind, self._cust_keys[customer], _encode(fields))
        self._append(message)
        truth.events += 1
        if truth.first_ts is None:
            truth.first_ts = ts
        truth.last_ts = ts if truth.last_ts is None else max(truth.last_ts, ts)
        if self.config.duplicates and noise.random() < self.config.duplicates:
            due = self._pushed + noise.randint(1, 4)
            heapq.heappush(self._dups, (due, self._pushed, message))
            truth.duplicates[truth.topic(kind)] += 1
        if self.config.malformed and noise.random() < self.config.malformed:
            self._send_malformed(kind, customer, fields)

    def _send_malformed(self, kind: TopicKind, customer: int, fields: Mapping[str, Any]) -> None:
        noise = self._noise
        template = dict(fields)
        template["event_id"] = self._new_malformed_id()
        reasons: Sequence[str]
        required: Sequence[str]
        strings: Sequence[str]
        if kind == "offers":
            template["offer_id"] = self._new_malformed_id()
            reasons, required, strings = (
                OFFER_REJECT_REASONS,
                OFFER_REQUIRED,
                OFFER_REQUIRED_STRINGS,
            )
        else:
            template["order_id"] = f"ORD-X{self._malformed_ids:08d}"
            template.pop("offer_id", None)
            template["is_upsell"] = False
            reasons, required, strings = (
                PURCHASE_REJECT_REASONS,
                PURCHASE_REQUIRED,
                PURCHASE_REQUIRED_STRINGS,
            )
        reason = noise.choice(reasons)
        key: bytes | None = self._cust_keys[customer]
        if reason == NOT_JSON:
            key = None
            if noise.random() < 0.5:
                # A legacy producer writing Latin-1: é becomes a lone 0xE9 byte.
                template["note"] = "café crème"
                value = json.dumps(template, ensure_ascii=False, separators=(",", ":")).encode(
                    "latin-1"
                )
            else:
                whole = _encode(template)
                value = whole[: noise.randrange(1, len(whole))]
        elif reason == NOT_OBJECT:
            key = None
            if noise.random() < 0.5:
                value = _encode([template])
            else:
                value = _encode(_ENCODER.encode(template))
        else:
            if reason == MISSING_FIELD:
                del template[noise.choice(required)]
            elif reason == WRONG_TYPE:
                if kind == "purchases" and noise.random() < 0.4:
                    template["amount"] = f"{template['amount']:.2f}"
                else:
                    template[noise.choice(strings)] = noise.randint(1, 999_999)
            elif reason == NEGATIVE_AMOUNT:
                template["amount"] = -template["amount"]
            else:
                template["ts"] = noise.choice(BAD_TS_TEXTS)
            value = _encode(template)
        self._append(SimMessage(kind, key, value))
        topic = self.truth.topic(kind)
        self.truth.rejected.setdefault(topic, Counter())[reason] += 1

    def _append(self, message: SimMessage) -> None:
        while self._dups and self._dups[0][0] <= self._pushed:
            self._outbox.append(heapq.heappop(self._dups)[2])
            self._count_sent(self._outbox[-1])
        self._outbox.append(message)
        self._count_sent(message)

    def _count_sent(self, message: SimMessage) -> None:
        self._pushed += 1
        self.truth.messages_sent[self.truth.topic(message.topic_kind)] += 1

    def _drain(self) -> Iterator[SimMessage]:
        outbox = self._outbox
        self._outbox = []
        return iter(outbox)


def generate(config: ScenarioConfig) -> Simulation:
    """The scenario's messages in event-time order; `.truth` is complete once exhausted."""
    return Simulation(config)
