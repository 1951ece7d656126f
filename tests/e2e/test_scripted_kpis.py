"""The KPI family on a scripted event set, with one worker and with two on six partitions.

The expected figures are computed here from the script itself: each offer says whether
it converts and each purchase whether it is an upsell transaction, as the contract's
rules decide for these events. Windows 5m and 1h, grace 1m, attribution window 1h.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Deployment, as_json, deployment, latest_by_key, read_topic
from tests.e2e.test_scripted_rates import SIZES, at, family, phase, rfc

ALL, NONE = "__all__", "__none__"
BANDS = {
    "campaign": [(0.20, "excellent"), (0.10, "good"), (0.05, "moderate"), (0.0, "low")],
    "loyalty": [(0.25, "exceptional"), (0.15, "healthy"), (0.0, "low")],
}


@dataclass
class Offer:
    offer_id: str
    customer: str
    channel: str
    segment: str
    campaign_type: str | None
    product_line: str | None
    ts: datetime
    converted_amount: float | None = None

    def message(self, topic: str) -> tuple[str, bytes, bytes]:
        body: dict[str, Any] = {
            "event_id": f"ev-{self.offer_id}",
            "offer_id": self.offer_id,
            "customer_id": self.customer,
            "channel": self.channel,
            "segment": self.segment,
            "ts": rfc(self.ts),
        }
        if self.campaign_type is not None:
            body["campaign_type"] = self.campaign_type
        if self.product_line is not None:
            body["product_line"] = self.product_line
        return (topic, self.customer.encode(), as_json(body))

    def campaign(self) -> tuple[str, str]:
        return (self.campaign_type or NONE, self.product_line or NONE)


@dataclass
class Purchase:
    event_id: str
    customer: str
    ts: datetime
    amount: float
    upsell: bool
    fields: dict[str, Any] = field(default_factory=dict)
    late_for: tuple[str, ...] = ()

    def message(self, topic: str) -> tuple[str, bytes, bytes]:
        body = {
            "event_id": self.event_id,
            "order_id": f"o-{self.event_id}",
            "customer_id": self.customer,
            "ts": rfc(self.ts),
            "amount": self.amount,
            **self.fields,
        }
        return (topic, self.customer.encode(), as_json(body))

    def key(self) -> tuple[str, str]:
        member = self.fields.get("loyalty_member")
        loyalty = "unknown" if member is None else ("member" if member else "non_member")
        return (loyalty, self.fields.get("product_line", NONE))


OFFERS = [
    Offer(
        "a1",
        "cA",
        "email",
        "smb",
        "email_offer",
        "pro",
        at(0, 0) + timedelta(seconds=10),
        converted_amount=50.0,
    ),
    Offer("a2", "cA", "sms", "smb", "limited_time", "pro", at(20 / 60)),
    Offer("a3", "cA", "email", "smb", "email_offer", "pro", at(30 / 60)),
    Offer(
        "b1", "cB", "email", "enterprise", "loyalty_upgrade", None, at(1), converted_amount=120.5
    ),
    Offer("c1", "cC", "push", "smb", None, "storage", at(1.5), converted_amount=30.0),
    Offer("d1", "cD", "email", "smb", "email_offer", "pro", at(2)),
]
Z1 = Offer("z1", "cZ", "web", "consumer", "limited_time", "basic", at(30))
FINAL = Offer("f1", "cF2", "web", "consumer", "limited_time", "basic", at(30, hours=2))
PURCHASES = [
    Purchase(
        "pa1",
        "cA",
        at(40 / 60),
        50.0,
        True,
        {"offer_id": "a1", "loyalty_member": True, "product_line": "pro"},
    ),
    Purchase("pb1", "cB", at(1 + 40 / 60), 120.5, True, {"offer_id": "b1"}),
    Purchase(
        "pc1",
        "cC",
        at(2 + 10 / 60),
        30.0,
        True,
        {"is_upsell": True, "loyalty_member": False, "product_line": "storage"},
    ),
    Purchase(
        "px1",
        "cA",
        at(2 + 20 / 60),
        80.0,
        False,
        {"is_upsell": False, "loyalty_member": True, "product_line": "pro"},
    ),
    Purchase(
        "px2", "cE", at(2.5), 20.0, False, {"loyalty_member": False, "product_line": "storage"}
    ),
    # An upsell by its own flag; cB has no unconverted offer left, so it converts nothing.
    Purchase("px3", "cB", at(3), 10.0, True, {"is_upsell": True, "product_line": "basic"}),
]
LATE = Purchase(
    "px4",
    "cF",
    at(50 / 60),
    99.0,
    True,
    {"is_upsell": True, "loyalty_member": True, "product_line": "pro"},
    late_for=("5m",),
)
ALL_OFFERS = [*OFFERS, Z1, FINAL]
ALL_PURCHASES = [*PURCHASES, LATE]


def start_of(moment: datetime, label: str) -> datetime:
    size = SIZES[label].total_seconds()
    epoch = moment.timestamp()
    return datetime.fromtimestamp(epoch - epoch % size, moment.tzinfo)


def rollups(key: tuple[str, str]) -> list[tuple[str, str]]:
    return [key, (key[0], ALL), (ALL, key[1]), (ALL, ALL)]


def band(rate: float | None, scale: str) -> str | None:
    if rate is None:
        return None
    return next(name for bound, name in BANDS[scale] if rate >= bound)


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def expected_campaign(label: str, start: datetime) -> dict[tuple[str, str], dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"offers": 0, "conversions": 0, "revenue": 0.0, "targeted": set(), "upsold": set()}
    )
    for offer in ALL_OFFERS:
        if start_of(offer.ts, label) != start:
            continue
        for key in rollups(offer.campaign()):
            row = rows[key]
            row["offers"] += 1
            row["targeted"].add(offer.customer)
            if offer.converted_amount is not None:
                row["conversions"] += 1
                row["revenue"] += offer.converted_amount
                row["upsold"].add(offer.customer)
    return {
        key: {
            "offers": r["offers"],
            "conversions": r["conversions"],
            "rate": ratio(r["conversions"], r["offers"]),
            "revenue": r["revenue"],
            "customers_targeted": len(r["targeted"]),
            "customers_upsold": len(r["upsold"]),
            "customer_rate": ratio(len(r["upsold"]), len(r["targeted"])),
            "band": band(ratio(r["conversions"], r["offers"]), "campaign"),
        }
        for key, r in rows.items()
    }


def expected_purchases(label: str, start: datetime) -> dict[tuple[str, str], dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"n": Counter(), "amount": Counter(), "any": set(), "upsell": set()}
    )
    for purchase in ALL_PURCHASES:
        if start_of(purchase.ts, label) != start or label in purchase.late_for:
            continue
        kind = "upsell" if purchase.upsell else "other"
        for key in rollups(purchase.key()):
            row = rows[key]
            row["n"][kind] += 1
            row["amount"][kind] += purchase.amount
            row["any"].add(purchase.customer)
            if purchase.upsell:
                row["upsell"].add(purchase.customer)
    result = {}
    for key, r in rows.items():
        up, other = r["n"]["upsell"], r["n"]["other"]
        up_amount, other_amount = r["amount"]["upsell"], r["amount"]["other"]
        rate = ratio(up, up + other)
        result[key] = {
            "upsell_purchases": up,
            "other_purchases": other,
            "purchases": up + other,
            "upsell_amount": up_amount,
            "other_amount": other_amount,
            "transaction_rate": rate,
            "revenue_share": ratio(up_amount, up_amount + other_amount),
            "aov_uplift": None if not up or not other else up_amount / up - other_amount / other,
            "buyers": len(r["any"]),
            "upsell_buyers": len(r["upsell"]),
            "buyer_rate": ratio(len(r["upsell"]), len(r["any"])),
            "band": band(rate, "loyalty" if key[0] == "member" else "campaign"),
        }
    return result


@pytest.mark.parametrize("workers", [1, 2])
def test_kpi_family_on_scripted_events(data_dir: Path, workers: int) -> None:
    env = {"UPSELL_WINDOWS": "5m,1h", "UPSELL_GRACE": "1m", "UPSELL_ATTRIBUTION_WINDOW": "1h"}
    with deployment(data_dir, extra_env=env, partitions=6) as service:
        offers, purchases = service.topics["offers"], service.topics["purchases"]
        assert service.cli("topics", "create").returncode == 0
        for _ in range(workers):
            service.start_worker()
        phase(service, [o.message(offers) for o in OFFERS] + [OFFERS[-1].message(offers)])
        phase(
            service, [p.message(purchases) for p in PURCHASES] + [PURCHASES[0].message(purchases)]
        )
        phase(service, [Z1.message(offers)])
        phase(service, [LATE.message(purchases)])
        check_current_gauges(service)
        phase(service, [FINAL.message(offers)])
        check_counters(service)
        check_kpi_topic(service.topics["kpis"])
        check_rates_topic_customer_fields(service.topics["rates"])


def gauge(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def check_current_gauges(service: Deployment) -> None:
    """Stream time 10:30: the 1h window [10:00, 11:00) holds everything but f1."""
    samples = service.metrics()
    window = {"window": "1h"}
    campaign = expected_campaign("1h", at(0))
    got = {
        (dict(k)["campaign_type"], dict(k)["product_line"]): v
        for k, v in family(samples, "upsell_campaign_window_offers").items()
        if dict(k)["window"] == "1h"
    }
    assert got == {key: row["offers"] for key, row in campaign.items()}
    for (campaign_type, product_line), row in campaign.items():
        labels = {"campaign_type": campaign_type, "product_line": product_line, **window}
        assert gauge(samples, "upsell_campaign_window_conversions", **labels) == row["conversions"]
        assert gauge(samples, "upsell_campaign_rate", **labels) == row["rate"]
    customers = expected_customers("1h", at(0))
    for (channel, segment), (targeted, upsold) in customers.items():
        labels = {"channel": channel, "segment": segment, **window}
        assert gauge(samples, "upsell_window_customers_targeted", **labels) == targeted
        assert gauge(samples, "upsell_window_customers_upsold", **labels) == upsold
        assert gauge(samples, "upsell_customer_rate", **labels) == upsold / targeted
    bought = expected_purchases("1h", at(0))
    for (loyalty, product_line), row in bought.items():
        labels = {"loyalty": loyalty, "product_line": product_line, **window}
        for kind in ("upsell", "other"):
            assert (
                gauge(samples, "upsell_window_purchases", kind=kind, **labels)
                == row[f"{kind}_purchases"]
            ), (kind, labels)
            assert gauge(samples, "upsell_window_purchase_amount", kind=kind, **labels) == (
                pytest.approx(row[f"{kind}_amount"])
            )
        assert gauge(samples, "upsell_window_buyers", kind="any", **labels) == row["buyers"]
        assert (
            gauge(samples, "upsell_window_buyers", kind="upsell", **labels) == row["upsell_buyers"]
        )
        for name in ("transaction_rate", "revenue_share", "aov_uplift", "buyer_rate"):
            value = gauge(samples, f"upsell_{name}", **labels)
            assert value == (None if row[name] is None else pytest.approx(row[name])), (
                name,
                labels,
            )
    assert gauge(samples, "upsell_band_lower_bound", scale="campaign", band="good") == 0.10
    assert gauge(samples, "upsell_band_lower_bound", scale="loyalty", band="healthy") == 0.15


def expected_customers(label: str, start: datetime) -> dict[tuple[str, str], tuple[int, int]]:
    targeted: dict[tuple[str, str], set[str]] = defaultdict(set)
    upsold: dict[tuple[str, str], set[str]] = defaultdict(set)
    for offer in ALL_OFFERS:
        if start_of(offer.ts, label) != start:
            continue
        for key in rollups((offer.channel, offer.segment)):
            targeted[key].add(offer.customer)
            if offer.converted_amount is not None:
                upsold[key].add(offer.customer)
    return {key: (len(group), len(upsold[key])) for key, group in targeted.items()}


def check_counters(service: Deployment) -> None:
    samples = service.metrics()
    offered: Counter[tuple[str, str]] = Counter()
    converted: Counter[tuple[str, str]] = Counter()
    revenue: Counter[tuple[str, str]] = Counter()
    for offer in ALL_OFFERS:
        for key in rollups(offer.campaign()):
            offered[key] += 1
            if offer.converted_amount is not None:
                converted[key] += 1
                revenue[key] += offer.converted_amount  # type: ignore[assignment]

    def by_campaign(name: str) -> dict[tuple[str, str], float]:
        return {
            (dict(k)["campaign_type"], dict(k)["product_line"]): v
            for k, v in family(samples, name).items()
        }

    assert by_campaign("upsell_campaign_offers_presented_total") == dict(offered)
    assert by_campaign("upsell_campaign_conversions_total") == dict(converted)
    assert by_campaign("upsell_campaign_revenue_total") == pytest.approx(dict(revenue))
    count: Counter[tuple[str, str, str]] = Counter()
    amount: Counter[tuple[str, str, str]] = Counter()
    for purchase in ALL_PURCHASES:
        kind = "upsell" if purchase.upsell else "other"
        for key in rollups(purchase.key()):
            count[(kind, *key)] += 1
            amount[(kind, *key)] += purchase.amount  # type: ignore[assignment]
    got = {
        (dict(k)["kind"], dict(k)["loyalty"], dict(k)["product_line"]): v
        for k, v in family(samples, "upsell_purchases_total").items()
    }
    assert got == dict(count)
    got_amount = {
        (dict(k)["kind"], dict(k)["loyalty"], dict(k)["product_line"]): v
        for k, v in family(samples, "upsell_purchase_amount_total").items()
    }
    assert got_amount == pytest.approx(dict(amount))
    assert family(samples, "upsell_events_duplicate_total") == {
        frozenset({("topic", service.topics["offers"])}): 1,
        frozenset({("topic", service.topics["purchases"])}): 1,
    }
    assert family(samples, "upsell_events_late_total") == {
        frozenset({("topic", service.topics["purchases"])}): 1
    }


def check_kpi_topic(topic: str) -> None:
    latest = latest_by_key(read_topic(topic))
    expected: dict[str, dict[str, Any]] = {}
    closed = [("5m", at(0)), ("5m", at(30)), ("1h", at(0))]
    for label, start in closed:
        for key, row in expected_campaign(label, start).items():
            expected[f"campaign|{label}|{rfc(start)}|{key[0]}|{key[1]}"] = row
        for key, row in expected_purchases(label, start).items():
            expected[f"purchases|{label}|{rfc(start)}|{key[0]}|{key[1]}"] = row
    assert set(latest) == set(expected)
    for topic_key, row in expected.items():
        record = latest[topic_key]
        assert record["final"] is True, topic_key
        view, size, window_start, first, second = topic_key.split("|")
        assert (record["view"], record["window"], record["window_start"]) == (
            view,
            size,
            window_start,
        )
        dims = (
            ("campaign_type", "product_line") if view == "campaign" else ("loyalty", "product_line")
        )
        assert (record[dims[0]], record[dims[1]]) == (first, second)
        for name, value in row.items():
            if isinstance(value, float):
                assert record[name] == pytest.approx(value), (topic_key, name)
            else:
                assert record[name] == value, (topic_key, name)


def check_rates_topic_customer_fields(topic: str) -> None:
    latest = latest_by_key(read_topic(topic))
    key = f"1h|{rfc(at(0))}|email|smb"
    record = latest[key]
    (targeted, upsold) = expected_customers("1h", at(0))[("email", "smb")]
    assert (record["customers_targeted"], record["customers_upsold"]) == (targeted, upsold)
    assert record["customer_rate"] == upsold / targeted
    assert record["band"] == band(record["rate"], "campaign")
