"""The publishing stage with drop detection, without Kafka: alert records on the alerts
topic, the detector's state persisted with the board's and restored after a restart, and
the two drop metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_app.domain.board import encode_partials
from stream_app.domain.cohorts import Partial
from stream_app.domain.drops import DropSettings
from stream_app.domain.views import CHANNEL_SEGMENT
from stream_app.pipeline import Pipeline
from stream_app.runtime.state_store import PartitionStore
from stream_app.serving.metrics import build_registry
from stream_app.serving.read_model import ReadModel
from stream_app.settings import Settings, WindowSize

MINUTE = 60_000
T0 = 1_795_305_600_000  # 2026-11-22T00:00:00Z
SETTINGS = Settings(
    windows=(WindowSize("1m", MINUTE),),
    grace_ms=5_000,
    attribution_window_ms=10 * MINUTE,
    partitions=1,
    drops=DropSettings(
        significance=0.001,
        min_offers=100,
        min_relative_drop=0.2,
        baseline_windows=3,
        age_ms=2 * MINUTE,
    ),
)


class FakeTable:
    """The part of a Faust table PartitionStore uses: its data."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}


@dataclass(frozen=True)
class FakeRecord:
    offset: int
    key: bytes | None
    value: bytes | None


class Driver:
    """Partials messages for one (email, smb) key, one per window, at the next offset."""

    def __init__(self, table: FakeTable) -> None:
        self.table = table
        self.pipeline = Pipeline(SETTINGS, PartitionStore(FakeTable()), PartitionStore(table))
        self.offset = 0
        self.outputs: list[tuple[str, str, dict[str, Any]]] = []

    def window(self, index: int, offers: int, conversions: int) -> None:
        start = T0 + index * MINUTE
        # The window's counts, with stream time past the previous windows' age.
        partial = Partial(
            CHANNEL_SEGMENT.name, "1m", start, ("email", "smb"), [offers, conversions, 0, 0, 0]
        )
        message = encode_partials(0, start + 30_000, [partial])
        outputs = self.pipeline.publish(0, [FakeRecord(self.offset, None, message)])
        self.offset += 1
        self.pipeline.persist(SETTINGS.topic_partials, 0)
        self.outputs += [
            (o.topic, (o.key or b"").decode(), json.loads(o.value or b"{}"))
            for o in outputs
            if o.topic == SETTINGS.topic_alerts
        ]


def samples(pipeline: Pipeline) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(build_registry(ReadModel(pipeline))).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("upsell_rate_drop_active", "upsell_alerts"))
    }


def labels(state: str | None = None) -> frozenset[tuple[str, str]]:
    pairs = {("channel", "email"), ("segment", "smb"), ("window", "1m")}
    return frozenset(pairs | ({("state", state)} if state else set()))


def test_alerts_are_published_persisted_and_exported_across_a_restart() -> None:
    table = FakeTable()
    driver = Driver(table)
    for index in range(6):
        driver.window(index, 400, 40)
    for index in range(6, 10):  # windows are measured 2 minutes after their end
        driver.window(index, 400, 10)
    assert [(topic, key, record["state"]) for topic, key, record in driver.outputs] == [
        (SETTINGS.topic_alerts, "1m|email|smb", "fired")
    ]
    assert samples(driver.pipeline) == {
        ("upsell_rate_drop_active", labels()): 1.0,
        ("upsell_alerts_total", labels("fired")): 1.0,
        ("upsell_alerts_total", labels("resolved")): 0.0,
    }

    # A new worker takes the board over from the persisted state.
    restarted = Driver(table)
    restarted.offset = driver.offset
    assert samples(restarted.pipeline) == {}
    restarted.pipeline.load(SETTINGS.topic_partials, 0)
    assert samples(restarted.pipeline)[("upsell_rate_drop_active", labels())] == 1.0
    for index in range(10, 16):
        restarted.window(index, 400, 40)
    (resolved,) = [record for _, _, record in restarted.outputs]
    assert resolved["state"] == "resolved"
    assert resolved["fired_window_start"] == "2026-11-22T00:06:00.000Z"
    assert resolved["baseline_rate"] == 0.1
    assert samples(restarted.pipeline) == {
        ("upsell_rate_drop_active", labels()): 0.0,
        ("upsell_alerts_total", labels("fired")): 1.0,
        ("upsell_alerts_total", labels("resolved")): 1.0,
    }


def test_progress_metrics_show_input_read_and_lag() -> None:
    pipeline = Pipeline(SETTINGS, PartitionStore(FakeTable()), PartitionStore(FakeTable()))
    offer = {
        "event_id": "e1",
        "offer_id": "o1",
        "customer_id": "c1",
        "channel": "email",
        "segment": "smb",
        "ts": T0,
    }
    pipeline.validate(
        {
            (SETTINGS.topic_offers, 0): [
                FakeRecord(0, b"c1", json.dumps(offer).encode()),
                FakeRecord(1, None, b"not json"),
            ]
        }
    )
    pipeline.lag[(SETTINGS.topic_offers, 0)] = 7
    text = generate_latest(build_registry(ReadModel(pipeline))).decode()
    got = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("upsell_events_processed_total", "upsell_consumer_lag")
    }
    assert got == {
        ("upsell_events_processed_total", frozenset({("topic", SETTINGS.topic_offers)})): 2,
        ("upsell_events_processed_total", frozenset({("topic", SETTINGS.topic_purchases)})): 0,
        (
            "upsell_consumer_lag",
            frozenset({("topic", SETTINGS.topic_offers), ("partition", "0")}),
        ): 7,
    }
