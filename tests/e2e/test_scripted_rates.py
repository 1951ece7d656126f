"""A scripted event set through the real worker: every contract metric and rates record.

Produced in phases, each waited for, because the contract's outcomes for late events and
last-touch purchases depend on what stream time has reached when an event arrives.

Windows 5m and 1h, grace 1m, attribution window 1h. Times are minutes:seconds after
2026-11-22T10:00:00Z unless written as hours.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.e2e.harness import Deployment, as_json, deployment, latest_by_key, produce, read_topic

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
ALL = "__all__"
SIZES = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1)}
GRACE = timedelta(minutes=1)
ATTRIBUTION = timedelta(hours=1)


def at(minutes: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, hours=hours)


def rfc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class ScriptOffer:
    offer_id: str
    customer: str
    channel: str
    segment: str
    ts: datetime
    late_for: tuple[str, ...] = ()
    converted_amount: float | None = None

    def message(self, topic: str, ms_ts: bool = False) -> tuple[str, bytes, bytes]:
        ts: Any = int(self.ts.timestamp() * 1000) if ms_ts else rfc(self.ts)
        body = {
            "event_id": f"ev-{self.offer_id}",
            "offer_id": self.offer_id,
            "customer_id": self.customer,
            "channel": self.channel,
            "segment": self.segment,
            "ts": ts,
            "campaign_id": "c-42",
        }
        return (topic, self.customer.encode(), as_json(body))


def purchase(
    topic: str,
    event_id: str,
    customer: str,
    ts: datetime,
    amount: float,
    offer_id: str | None = None,
    **extra: Any,
) -> tuple[str, bytes, bytes]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "order_id": f"order-{event_id}",
        "customer_id": customer,
        "ts": rfc(ts),
        "amount": amount,
        **extra,
    }
    if offer_id is not None:
        body["offer_id"] = offer_id
    return (topic, customer.encode(), as_json(body))


O1 = ScriptOffer("o1", "c1", "email", "smb", at(0.5), converted_amount=10.0)
O2 = ScriptOffer("o2", "c2", "sms", "enterprise", at(1), converted_amount=20.25)
O3 = ScriptOffer("o3", "c3", "email", "enterprise", at(1 + 10 / 60))
O4 = ScriptOffer("o4", "c3", "push", "enterprise", at(1 + 40 / 60), converted_amount=30.0)
O5 = ScriptOffer("o5", "c4", "email", "smb", at(10 / 60))
O6 = ScriptOffer("o6", "c5", "push", "smb", at(3))
O9 = ScriptOffer("o9", "c9", "web", "smb", at(30))
O8 = ScriptOffer("o8", "c8", "email", "smb", at(3.5), late_for=("5m",))
O7 = ScriptOffer("o7", "c7", "sms", "smb", at(20), late_for=("5m", "1h"))
O10 = ScriptOffer("o10", "c10", "web", "consumer", at(30, hours=2))
OFFERS = [O1, O2, O3, O4, O5, O6, O9, O8, O7, O10]


def malformed(offers: str, purchases: str) -> list[tuple[str, bytes | None, bytes, str]]:
    good_offer = {
        "event_id": "bad-x",
        "offer_id": "bad-o",
        "customer_id": "bad-c",
        "channel": "email",
        "segment": "smb",
        "ts": rfc(at(2)),
    }
    good_purchase = {
        "event_id": "bad-y",
        "order_id": "bad-order",
        "customer_id": "bad-c",
        "ts": rfc(at(2)),
        "amount": 5,
    }

    def without(doc: dict[str, Any], name: str) -> bytes:
        return as_json({k: v for k, v in doc.items() if k != name})

    return [
        (offers, b"k", b"\xff\xfe not utf-8", "not_json"),
        (offers, b"k", b'{"event_id": "e", "offer_id": ', "not_json"),
        (offers, None, b'["an", "array"]', "not_object"),
        (offers, b"k", without(good_offer, "customer_id"), "missing_field"),
        (offers, b"k", as_json({**good_offer, "channel": 7}), "wrong_type"),
        (offers, b"k", as_json({**good_offer, "ts": "yesterday"}), "bad_ts"),
        (purchases, b"k", as_json({**good_purchase, "amount": -3}), "negative_amount"),
        (purchases, b"k", as_json({**good_purchase, "amount": "12.00"}), "wrong_type"),
        (purchases, b"k", without(good_purchase, "order_id"), "missing_field"),
    ]


def expected_windows() -> dict[tuple[str, datetime, str, str], list[float]]:
    """[offers, conversions, revenue] per (size, window start, channel, segment), roll-ups in."""
    counts: dict[tuple[str, datetime, str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for offer in OFFERS:
        for label, size in SIZES.items():
            if label in offer.late_for:
                continue
            epoch = offer.ts.timestamp()
            start = datetime.fromtimestamp(epoch - epoch % size.total_seconds(), UTC)
            for channel in (offer.channel, ALL):
                for segment in (offer.segment, ALL):
                    entry = counts[(label, start, channel, segment)]
                    entry[0] += 1
                    if offer.converted_amount is not None:
                        entry[1] += 1
                        entry[2] += offer.converted_amount
    return counts


def pair_rollups(counter: Counter[tuple[str, str]]) -> dict[tuple[str, str], float]:
    rolled: Counter[tuple[str, str]] = Counter()
    for (channel, segment), value in counter.items():
        for key in ((channel, segment), (channel, ALL), (ALL, segment), (ALL, ALL)):
            rolled[key] += value
    return dict(rolled)


def metric(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def family(samples: dict[Any, float], name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def test_scripted_event_set_through_the_real_worker(data_dir: Path) -> None:
    env = {"UPSELL_WINDOWS": "5m,1h", "UPSELL_GRACE": "1m", "UPSELL_ATTRIBUTION_WINDOW": "1h"}
    with deployment(data_dir, extra_env=env) as service:
        topics = service.topics
        offers, purchases = topics["offers"], topics["purchases"]
        assert service.cli("topics", "create").returncode == 0
        service.start_worker()

        # A: a purchase that names its offer before the offer exists.
        phase(service, [purchase(purchases, "p2", "c2", at(1.5), 20.25, offer_id="o2")])
        # B: the first minutes, offers first (a last-touch purchase is decided once stream
        # time passes its ts + grace, whatever offers have arrived by then): explicit and
        # last-touch conversions, another customer's offer named, duplicates and every kind
        # of malformed message.
        bad = malformed(offers, purchases)
        phase(
            service,
            [
                O1.message(offers),
                O2.message(offers, ms_ts=True),
                O3.message(offers),
                O4.message(offers),
                O5.message(offers),
                O6.message(offers),
                O1.message(offers),  # duplicate
                *[(topic, key, value) for topic, key, value, _ in bad if topic == offers],
            ],
        )
        phase(
            service,
            [
                purchase(purchases, "p1", "c1", at(2), 10.0, offer_id="o1"),
                purchase(purchases, "p3", "c3", at(2.5), 30.0, is_upsell=True),  # last touch: o4
                purchase(purchases, "p5", "c6", at(3.2), 99.0, offer_id="o6"),  # not c6's offer
                purchase(purchases, "p6", "c5", at(4), 15.0, is_upsell=False),  # not an upsell
                purchase(purchases, "p1", "c1", at(2), 10.0, offer_id="o1"),  # duplicate
                *[(topic, key, value) for topic, key, value, _ in bad if topic == purchases],
            ],
        )
        phase(service, [O9.message(offers)])
        # C: stream time is 10:30, so o8 (10:03:30) is late for 5m only.
        phase(service, [O8.message(offers)])
        check_current_windows(service)
        # D: a purchase of o5 after its attribution window; stream time moves to 11:11.
        phase(service, [purchase(purchases, "p4", "c4", at(11, hours=1), 40.0, offer_id="o5")])
        # E: o7 (10:20) is now late for both sizes. F: 12:30 closes and finalizes the 10:00s.
        phase(service, [O7.message(offers)])
        phase(service, [O10.message(offers)])

        samples = service.metrics()
        offered = Counter((o.channel, o.segment) for o in OFFERS)
        converted = Counter((o.channel, o.segment) for o in OFFERS if o.converted_amount)
        revenue: Counter[tuple[str, str]] = Counter()
        for o in OFFERS:
            if o.converted_amount:
                revenue[(o.channel, o.segment)] += o.converted_amount  # type: ignore[assignment]
        for name, counter in (
            ("upsell_offers_presented_total", offered),
            ("upsell_conversions_total", converted),
            ("upsell_revenue_total", revenue),
        ):
            got = {
                dict(labels)["channel"] + "|" + dict(labels)["segment"]: value
                for labels, value in family(samples, name).items()
            }
            want = {f"{c}|{s}": v for (c, s), v in pair_rollups(counter).items()}
            assert got == want, name

        rejected = Counter((topic, reason) for topic, _, _, reason in bad)
        assert {
            (dict(k)["topic"], dict(k)["reason"]): v
            for k, v in family(samples, "upsell_events_rejected_total").items()
        } == rejected
        assert family(samples, "upsell_events_duplicate_total") == {
            frozenset({("topic", offers)}): 1,
            frozenset({("topic", purchases)}): 1,
        }
        assert family(samples, "upsell_events_late_total") == {frozenset({("topic", offers)}): 2}

        # Current windows at 12:30: only o10's.
        for label in SIZES:
            for channel in ("web", ALL):
                for segment in ("consumer", ALL):
                    key = {"channel": channel, "segment": segment, "window": label}
                    assert metric(samples, "upsell_window_offers", **key) == 1
                    assert metric(samples, "upsell_window_conversions", **key) == 0
                    assert metric(samples, "upsell_rate", **key) == 0
        assert len(family(samples, "upsell_window_offers")) == 2 * 4

        check_rates_topic(topics["rates"])
        check_dead_letters(topics["deadletter"], bad)


def phase(service: Deployment, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
    produce(messages)
    service.wait_caught_up()


def check_current_windows(service: Deployment) -> None:
    """At stream time 10:30: the 5m window [10:30, 10:35) and the 1h window [10:00, 11:00)."""
    samples = service.metrics()
    want = expected_windows()
    current = {"5m": at(30), "1h": at(0)}
    for label, start in current.items():
        expected = {
            (c, s): v for (lab, st, c, s), v in want.items() if lab == label and st == start
        }
        got_offers = {
            (dict(k)["channel"], dict(k)["segment"]): v
            for k, v in family(samples, "upsell_window_offers").items()
            if dict(k)["window"] == label
        }
        assert got_offers == {key: v[0] for key, v in expected.items()}, label
        for (channel, segment), (n_offers, n_conv, _) in expected.items():
            key = {"channel": channel, "segment": segment, "window": label}
            assert metric(samples, "upsell_window_conversions", **key) == n_conv
            assert metric(samples, "upsell_rate", **key) == n_conv / n_offers


def check_rates_topic(topic: str) -> None:
    latest = latest_by_key(read_topic(topic))
    want = {
        f"{label}|{rfc(start)}|{channel}|{segment}": values
        for (label, start, channel, segment), values in expected_windows().items()
        # Closed by 12:30: everything but o10's windows; final once past end + 1h + 1m.
        if start + SIZES[label] + GRACE < at(30, hours=2)
    }
    assert set(latest) == set(want)
    for key, (n_offers, n_conv, revenue) in want.items():
        record = latest[key]
        label, start, channel, segment = key.split("|")
        assert record["window"] == label and record["window_start"] == start
        assert record["channel"] == channel and record["segment"] == segment
        assert (record["offers"], record["conversions"]) == (n_offers, n_conv), key
        assert record["revenue"] == revenue, key
        assert record["rate"] == n_conv / n_offers
        assert record["final"] is True, key
        end = datetime.fromisoformat(start.replace("Z", "+00:00")) + SIZES[label]
        assert record["window_end"] == rfc(end)


def check_dead_letters(topic: str, bad: list[tuple[str, bytes | None, bytes, str]]) -> None:
    records = read_topic(topic)
    got = Counter(
        (dict(r.headers)["source_topic"].decode(), r.value, dict(r.headers)["reason"].decode())
        for r in records
    )
    assert got == Counter((t, value, reason) for t, _, value, reason in bad)
    for record in records:
        headers = dict(record.headers)
        assert int(headers["source_partition"].decode()) >= 0
        assert int(headers["source_offset"].decode()) >= 0
