"""Hostile input through the real worker: the corpus of tests/corpus, messages drawn by
hypothesis, 1 MB messages, deep nesting, empty and missing keys, thousands of distinct
segments, values over 256 characters, timestamps ahead of the wall clock, and last an
event in year 9999 (rejected, then taken with UPSELL_MAX_FUTURE=off).

The worker never stops; every rejected message reaches the dead-letter topic unchanged
with its reason; the label cap holds the series of each dimension to its bound; and the
counts equal what the validator (the oracle: the same parse functions, pinned to the
manifest's reasons by tests/unit/test_hostile_core.py) says of each message, with the
default UPSELL_MAX_FUTURE of 1h from the wall clock.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from stream_app.domain.events import (
    FUTURE_TS,
    REJECT_REASONS,
    InvalidEvent,
    parse_offer,
    parse_purchase,
)
from stream_app.domain.labels import OTHER
from stream_app.domain.windows import rfc3339, window_start
from tests.e2e.harness import BROKER, deployment, read_topic, wait_until
from tests.e2e.resilience import worker_metrics

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
CAP = 40
SEGMENTS = 2_000
# An attribution window longer than the calendar: admitted label values never leave
# (their leaving is unit-tested), so the cap's bound holds per partition for good.
ENV = {
    "UPSELL_MAX_LABEL_VALUES": str(CAP),
    "UPSELL_GRACE": "1h",
    "UPSELL_ATTRIBUTION_WINDOW": "3660000d",
}
T = "2026-11-22T10:20:00Z"
ONE_MB = 1_000_000
HOUR_MS = 3_600_000

Message = tuple[str, bytes | None, bytes | None]  # topic kind, key, value


def corpus() -> list[Message]:
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    return [
        (case["topic"], None, (CORPUS / case["file"]).read_bytes()) for case in manifest["cases"]
    ]


def generated() -> list[Message]:
    """Cases too large to keep as files."""
    offer = {
        "event_id": "g-big",
        "offer_id": "o-big",
        "customer_id": "c-big",
        "channel": "web",
        "segment": "smb",
        "ts": T,
    }
    padding = ONE_MB - len(json.dumps({**offer, "padding": ""}))
    padded = json.dumps({**offer, "padding": "p" * padding}).encode()
    assert len(padded) == ONE_MB
    return [
        ("offers", b"k", padded),  # 1 MB, valid
        ("purchases", None, b"\xff" * ONE_MB),  # 1 MB of bytes that are not UTF-8
        ("offers", b"", b"[" * 100_000 + b"]" * 100_000),  # nested too deeply
        ("purchases", b"k", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
        ("offers", b"t", None),  # no value at all (a tombstone)
        (
            "offers",
            b"",
            json.dumps(
                {**offer, "event_id": "g-emptykey", "offer_id": "o-ek", "segment": "s" * 300}
            ).encode(),
        ),
        *near_future(),
    ]


def near_future() -> list[Message]:
    """Timestamps around the default UPSELL_MAX_FUTURE (1h) from now, with margins far
    wider than the time between sending and validating them."""
    now_ms = int(time.time() * 1000)
    offer = {"offer_id": "o-soon", "customer_id": "c-soon", "channel": "web", "segment": "smb"}
    purchase = {"order_id": "r-soon", "customer_id": "c-soon", "amount": 1.5}
    return [
        (
            "offers",
            None,
            json.dumps({**offer, "event_id": "g-in-30m", "ts": now_ms + HOUR_MS // 2}).encode(),
        ),  # valid
        (
            "offers",
            None,
            json.dumps(
                {**offer, "event_id": "g-in-2h", "offer_id": "o-2h", "ts": now_ms + 2 * HOUR_MS}
            ).encode(),
        ),
        (
            "purchases",
            None,
            json.dumps({**purchase, "event_id": "g-p-in-3h", "ts": now_ms + 3 * HOUR_MS}).encode(),
        ),
        (
            "purchases",
            None,
            json.dumps(
                {**purchase, "event_id": "g-p-in-20m", "ts": now_ms + HOUR_MS // 3}
            ).encode(),
        ),  # valid
    ]


def many_segments() -> list[Message]:
    """Far more distinct segments than the cap: every partition admits CAP at most."""
    rng = random.Random(7)
    return [
        (
            "offers",
            rng.choice([None, b"", f"k{n}".encode()]),
            json.dumps(
                {
                    "event_id": f"seg-{n}",
                    "offer_id": f"o-seg-{n}",
                    "customer_id": f"c{n % 300}",
                    "channel": "email",
                    "segment": f"segment-{n}",
                    "ts": T,
                }
            ).encode(),
        )
        for n in range(SEGMENTS)
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = (
    "event_id",
    "offer_id",
    "order_id",
    "customer_id",
    "channel",
    "segment",
    "ts",
    "amount",
    "is_upsell",
    "offered_price",
    "product_line",
    "campaign_type",
)
drawn_message = st.tuples(
    st.sampled_from(["offers", "purchases"]),
    st.none() | st.binary(max_size=8),
    st.binary(max_size=200)
    | st.dictionaries(st.sampled_from(FIELDS), json_values).map(
        lambda fields: json.dumps(fields).encode()
    ),
)


def hypothesis_messages(count: int) -> list[Message]:
    """`count` messages drawn by hypothesis, the same on every run."""
    drawn: list[list[Message]] = []

    @settings(
        max_examples=1,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(st.lists(drawn_message, min_size=count, max_size=count))
    def draw(messages: list[Message]) -> None:
        drawn.append(messages)

    draw()
    return drawn[0]


def reason_of(kind: str, value: bytes | None) -> str | None:
    latest_ts = int(time.time() * 1000) + HOUR_MS
    try:
        (parse_offer if kind == "offers" else parse_purchase)(value, latest_ts)
    except InvalidEvent as error:
        return error.reason
    return None


def send(topics: dict[str, str], messages: list[Message]) -> None:
    producer = KafkaProducer(
        bootstrap_servers=BROKER, acks="all", linger_ms=5, max_request_size=4 * ONE_MB
    )
    try:
        for kind, key, value in messages:
            producer.send(topics[kind], key=key, value=value)
        producer.flush(timeout=120)
    finally:
        producer.close()


def by_label(samples: dict[Any, float], name: str, label: str) -> dict[str, float]:
    return {
        dict(labels)[label]: value for (sample, labels), value in samples.items() if sample == name
    }


def test_hostile_input_never_stops_the_worker(data_dir: Path) -> None:
    messages = [*corpus(), *generated(), *many_segments(), *hypothesis_messages(300)]
    random.Random(3).shuffle(messages)
    with deployment(data_dir, extra_env=ENV) as service:
        assert service.cli("topics", "create").returncode == 0
        port = service.start_worker()
        worker = service.workers[0]
        topics = {"offers": service.topics["offers"], "purchases": service.topics["purchases"]}
        send(topics, messages)
        service.wait_caught_up(timeout=240)
        assert worker.poll() is None

        expected: Counter[tuple[str, str]] = Counter()
        # Dedupe is by customer and event_id (the same id under another customer is
        # another event).
        valid_offers: set[tuple[str, str]] = set()
        for kind, _, value in messages:
            reason = reason_of(kind, value)
            if reason is not None:
                expected[(topics[kind], reason)] += 1
            elif kind == "offers":
                offer = parse_offer(value)
                valid_offers.add((offer.customer_id, offer.event_id))
        assert sum(expected.values()) > 200
        assert {r for _, r in expected} == set(REJECT_REASONS)

        # Every reject is in the dead-letter topic, unchanged, with its reason.
        dead = read_topic(service.topics["deadletter"], timeout=30)
        headers = [dict(record.headers) for record in dead]
        assert (
            Counter((h["source_topic"].decode(), h["reason"].decode()) for h in headers) == expected
        )
        sent_values = Counter(value for _, _, value in messages)
        assert all(sent_values[record.value] for record in dead)
        assert max(len(record.value or b"") for record in dead) == ONE_MB

        samples = worker_metrics(port)
        rejected = {
            (dict(labels)["topic"], dict(labels)["reason"]): value
            for (name, labels), value in samples.items()
            if name == "upsell_events_rejected_total"
        }
        assert rejected == expected
        offers = by_label(
            {k: v for k, v in samples.items() if ("channel", "__all__") in k[1]},
            "upsell_offers_presented_total",
            "segment",
        )
        assert offers["__all__"] == len(valid_offers)
        # The cap: at most CAP segments per partition, the rest under __other__.
        assert offers[OTHER] >= SEGMENTS - 6 * CAP
        assert len(offers) <= 6 * CAP + 2  # + __other__ and __all__
        overflow = by_label(samples, "upsell_label_overflow_total", "dimension")
        assert overflow["segment"] >= offers[OTHER]

        # Last, an event in year 9999: rejected as future_ts by default. With
        # UPSELL_MAX_FUTURE=off it is taken: stream time jumps to the end of the calendar,
        # every window closes and is published; the worker and its pages go on.
        year_9999 = {
            "event_id": "g-9999",
            "offer_id": "o-9999",
            "customer_id": "c-9999",
            "channel": "web",
            "segment": "smb",
            "ts": "9999-12-31T23:59:59.999Z",
        }
        send(topics, [("offers", None, json.dumps(year_9999).encode())])
        service.wait_caught_up(timeout=120)
        future = frozenset({("topic", topics["offers"]), ("reason", FUTURE_TS)})
        wait_until(
            lambda: (
                worker_metrics(port)[("upsell_events_rejected_total", future)]
                == expected[(topics["offers"], FUTURE_TS)] + 1
            ),
            30,
            "the reject counted",
        )
        # The 5m window of the valid offer 30 min ahead is not closed yet (grace 1h).
        soon = next(
            json.loads(value)["ts"]
            for _, _, value in messages
            if value is not None and b'"g-in-30m"' in value
        )
        soon_window = rfc3339(window_start(soon, 300_000))

        def soon_published() -> bool:
            return any(
                json.loads(r.value)["window_start"] == soon_window
                for r in read_topic(service.topics["rates"])
            )

        assert not soon_published()
        assert service.stop_worker() == 0
        service.extra_env["UPSELL_MAX_FUTURE"] = "off"
        port = service.start_worker()
        worker = service.workers[0]
        send(
            topics, [("offers", None, json.dumps({**year_9999, "event_id": "g-9999-off"}).encode())]
        )
        service.wait_caught_up(timeout=120)
        assert len(read_topic(service.topics["deadletter"], timeout=30)) == len(dead) + 1
        wait_until(soon_published, 60, "the windows closed by year 9999 published")
        for page in ("/metrics", "/healthz", "/api/rates", "/"):
            assert requests.get(f"http://127.0.0.1:{port}{page}", timeout=10).ok, page
        assert worker.poll() is None
