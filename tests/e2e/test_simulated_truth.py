"""Simulator runs through the real worker end with counters equal to the simulator's truth."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.e2e.harness import Deployment, deployment, wait_until

ALL = "__all__"
# Grace well beyond the event-time skew between partitions read in one fetch, so that
# every last-touch purchase finds its offer already there, as the simulator intends.
ENV = {"UPSELL_GRACE": "1h"}
OFFERS = 16_000  # with purchases, duplicates and malformed messages: over 50,000 events


def rolled_up(by_pair: dict[str, float]) -> dict[tuple[str, str], float]:
    rolled: dict[tuple[str, str], float] = defaultdict(float)
    for key, value in by_pair.items():
        channel, segment = key.split("|")
        for pair in ((channel, segment), (channel, ALL), (ALL, segment), (ALL, ALL)):
            rolled[pair] += value
    return dict(rolled)


def rolled_up_over(
    by_key: dict[str, float], positions: tuple[int, ...]
) -> dict[tuple[str, ...], float]:
    """Each "a|b|c" key, and its `__all__` roll-ups over the label positions given."""
    rolled: dict[tuple[str, ...], float] = defaultdict(float)
    for key, value in by_key.items():
        labels = tuple(key.split("|"))
        variants = {labels}
        for position in positions:
            variants |= {(*v[:position], ALL, *v[position + 1 :]) for v in variants}
        for variant in variants:
            rolled[variant] += value
    return dict(rolled)


def assert_amounts_equal(
    actual: dict[tuple[str, ...], float], expected: dict[tuple[str, ...], float], name: str
) -> None:
    assert actual.keys() == expected.keys(), name
    for key, value in expected.items():
        assert round(actual[key], 2) == round(value, 2), (name, key, actual[key], value)


def by_labels(samples: dict[Any, float], name: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(dict(key)[label] for label in labels): value
        for (sample, key), value in samples.items()
        if sample == name
    }


def assert_matches_truth(service: Deployment, truth: dict[str, Any]) -> None:
    samples = service.metrics()
    pair = ("channel", "segment")
    assert by_labels(samples, "upsell_offers_presented_total", *pair) == rolled_up(
        truth["offers_presented"]
    )
    assert by_labels(samples, "upsell_conversions_total", *pair) == rolled_up(truth["conversions"])
    revenue = by_labels(samples, "upsell_revenue_total", *pair)
    expected_revenue = rolled_up(truth["revenue"])
    assert revenue.keys() == expected_revenue.keys()
    for key, value in expected_revenue.items():
        assert round(revenue[key], 2) == round(value, 2), key
    campaign = ("campaign_type", "product_line")
    assert by_labels(samples, "upsell_campaign_offers_presented_total", *campaign) == (
        rolled_up_over(truth["campaign_offers_presented"], (0, 1))
    )
    assert by_labels(samples, "upsell_campaign_conversions_total", *campaign) == (
        rolled_up_over(truth["campaign_conversions"], (0, 1))
    )
    assert_amounts_equal(
        by_labels(samples, "upsell_campaign_revenue_total", *campaign),
        rolled_up_over(truth["campaign_revenue"], (0, 1)),
        "campaign revenue",
    )
    purchase = ("kind", "loyalty", "product_line")
    assert by_labels(samples, "upsell_purchases_total", *purchase) == rolled_up_over(
        truth["purchases_by_kind"], (1, 2)
    )
    assert_amounts_equal(
        by_labels(samples, "upsell_purchase_amount_total", *purchase),
        rolled_up_over(truth["purchase_amount"], (1, 2)),
        "purchase amount",
    )
    duplicates = {k: v for k, v in truth["duplicates"].items() if v}
    assert by_labels(samples, "upsell_events_duplicate_total", "topic") == {
        (topic,): n for topic, n in duplicates.items()
    }
    rejected = {
        (topic, reason): n
        for topic, reasons in truth["rejected"].items()
        for reason, n in reasons.items()
        if n
    }
    assert by_labels(samples, "upsell_events_rejected_total", "topic", "reason") == rejected


def simulate(service: Deployment, *args: str) -> dict[str, Any]:
    truth_file = service.data_dir / f"{service.name}-truth.json"
    result = service.cli(
        "simulate",
        "--count",
        str(OFFERS),
        "--seed",
        "11",
        "--truth-file",
        str(truth_file),
        *args,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    printed: dict[str, Any] = json.loads(result.stdout)
    assert printed == json.loads(truth_file.read_text())
    return printed


def test_simulator_run_matches_ground_truth(data_dir: Path) -> None:
    with deployment(data_dir, extra_env=ENV) as service:
        assert service.cli("topics", "create").returncode == 0
        service.start_worker()
        truth = simulate(service)
        assert sum(truth["messages_sent"].values()) >= 50_000
        service.wait_caught_up(timeout=600)
        assert_matches_truth(service, truth)
        # Everything the worker writes is under UPSELL_DATA_DIR, nothing in its working
        # directory (Faust's own default was `<app id>-data` there).
        assert not (Path.cwd() / f"{service.name}-data").exists()


def test_worker_stopped_mid_stream_and_restarted_ends_exact(data_dir: Path) -> None:
    with deployment(data_dir, extra_env=ENV) as service:
        assert service.cli("topics", "create").returncode == 0
        service.start_worker()
        outcome: dict[str, Any] = {}
        producer = threading.Thread(
            target=lambda: outcome.update(simulate(service, "--rate", "8000"))
        )
        producer.start()
        # Stop while events are flowing, wait a little, start again, twice.
        for _ in range(2):
            wait_until(lambda: _offers_seen(service) > 0, 120, "events to be counted")
            time.sleep(1.5)
            assert service.stop_worker(sig=signal.SIGTERM) == 0
            time.sleep(1.0)
            service.start_worker()
        producer.join(timeout=900)
        assert outcome, "the simulator did not finish"
        service.wait_caught_up(timeout=600)
        # Imported here: resilience imports this module.
        from tests.e2e.resilience import assert_exact

        assert_exact(service, outcome)


def _offers_seen(service: Deployment) -> float:
    samples = service.metrics()
    return samples.get(
        ("upsell_offers_presented_total", frozenset({("channel", ALL), ("segment", ALL)})), 0.0
    )
