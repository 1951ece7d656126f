"""The worker's liveness check (BatchConsumer.verify_event_path), as Faust's timer calls
it: quiet while the hot path handles records, one ERROR per stall with what to do."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from stream_app.runtime.hot_path import BatchConsumer, PipelineApp

OFFERS_2 = TP("upsell.offers", 2)
CHANGELOG_0 = TP("upsell-stream-partition-state-changelog", 0)
TIMEOUT_S = 60.0


class Partition:
    """aiokafka's state of an assigned partition, as the hot path reads it: read up to
    `position` (by default all of it) of the `highwater` records Kafka holds."""

    def __init__(self, highwater: int = 100, position: int | None = None) -> None:
        self.highwater = highwater
        self.position = highwater if position is None else position
        self.has_valid_position = True
        self.timestamp = 0  # when a fetch of it last answered


def _consumer(partitions: dict[TP, Partition]) -> Any:
    app: Any = object.__new__(PipelineApp)
    app.pipeline = SimpleNamespace(
        is_input=lambda topic: topic == OFFERS_2.topic, handles=lambda topic: False
    )
    app.consumer_generation_id = 1
    app._conf = SimpleNamespace(stream_processing_timeout=TIMEOUT_S)
    consumer: Any = object.__new__(BatchConsumer)
    consumer.app = app
    consumer._stalls = None
    consumer._stalls_generation = None
    consumer._read_offset = {}
    consumer._tp_state = partitions.get
    return consumer


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_busy_partition_is_quiet_and_a_stalled_one_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    offers = Partition()
    consumer = _consumer({OFFERS_2: offers})
    caplog.set_level(logging.INFO, logger="stream_app.runtime.hot_path")
    # Ten minutes of looks every 7 s while the hot path keeps up with new records.
    for look in range(90):
        offers.highwater = offers.position = 100 + 50 * look
        consumer._read_offset[OFFERS_2] = offers.highwater - 1 - 20  # 20 records behind
        consumer.verify_event_path(7.0 * look, OFFERS_2)
    assert caplog.records == []
    # Then the hot path stops handling while records keep arriving.
    stuck_at = consumer._read_offset[OFFERS_2]
    for look in range(90, 180):
        offers.highwater += 50
        consumer.verify_event_path(7.0 * look, OFFERS_2)
    errors = _errors(caplog)
    assert len(errors) == 1
    # The stall counts from the last look that saw progress (look 89); the first look 60 s
    # or more after it is look 98, when nine more looks' records have arrived.
    waiting = 100 + 50 * 89 + 50 * 9 - (stuck_at + 1)
    assert errors[0].startswith(
        f"upsell.offers partition 2: {waiting} records wait and none was handled for 63 s"
    )
    assert "restart the worker" in errors[0]
    # It moves again: one INFO line, no more errors.
    consumer._read_offset[OFFERS_2] = offers.highwater - 1
    consumer.verify_event_path(7.0 * 180, OFFERS_2)
    assert len(_errors(caplog)) == 1
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith("upsell.offers partition 2 moves again after a stall of")
    )


def test_a_rebalance_starts_the_count_again(caplog: pytest.LogCaptureFixture) -> None:
    offers = Partition()
    consumer = _consumer({OFFERS_2: offers})
    consumer._read_offset[OFFERS_2] = 10
    consumer.verify_event_path(0.0, OFFERS_2)
    # Faust does not look during a rebalance and its recovery: that pause is no stall.
    consumer.app.consumer_generation_id = 2
    consumer.verify_event_path(300.0, OFFERS_2)
    consumer.verify_event_path(359.0, OFFERS_2)
    assert _errors(caplog) == []
    consumer.verify_event_path(360.0, OFFERS_2)
    assert len(_errors(caplog)) == 1


def test_partitions_outside_the_hot_path_are_left_to_faust(
    caplog: pytest.LogCaptureFixture,
) -> None:
    changelog = Partition()
    consumer = _consumer({CHANGELOG_0: changelog})
    for look in range(100):
        consumer.verify_event_path(7.0 * look, CHANGELOG_0)
    assert _errors(caplog) == []
