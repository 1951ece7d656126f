"""The demo's plan and its description of what the worker watches: the simulator's drop
and the page's words must tell the same story; a previous demo's data is resumed or
removed for reasons the demo states."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from stream_app.domain.demo_source import DemoSource, SourceError
from stream_app.domain.events import parse_ts
from stream_app.domain.windows import rfc3339
from stream_app.serving.web import DemoSourceFile
from stream_app.tools import demo
from stream_app.tools.simulator.command import parse_drop
from stream_app.tools.simulator.scenario import (
    SEGMENTS,
    ScenarioConfig,
    expected_messages_per_offer,
)

STARTED = 1_795_000_000_000  # wall clock, ms
EVENT_START = 1_794_996_000_000


def test_the_described_drop_is_the_one_the_simulator_is_given() -> None:
    source, drop_option = demo.plan(STARTED, EVENT_START)
    drop = parse_drop(drop_option)
    described = source.drop
    assert described is not None and drop.until_offers is not None
    # Offers per wall second at the demo's rate, computed here from the scenario itself.
    offers_per_s = demo.DEMO_RATE / expected_messages_per_offer(ScenarioConfig())
    assert drop.channel == described.channel == demo.DROP_CHANNEL
    assert drop.factor == described.factor
    assert drop.after_offers / offers_per_s == pytest.approx(described.from_wall_s, abs=0.1)
    assert drop.until_offers / offers_per_s == pytest.approx(described.until_wall_s, abs=0.1)
    # Offer n has event time start + n x the gap (one event-second per offer).
    assert described.from_event_ms == EVENT_START + drop.after_offers * 1000
    assert described.until_event_ms == EVENT_START + drop.until_offers * 1000
    assert source.speed == pytest.approx(offers_per_s, abs=0.1)
    assert [c.segment for c in described.changes] == list(SEGMENTS)
    for change in described.changes:
        assert change.to_rate == pytest.approx(change.from_rate * drop.factor, abs=1e-4)
    # The story fits in five minutes: the drop ends, and with a window to spare.
    assert described.until_wall_s + 60 < 300


def test_the_description_reads_back_as_written() -> None:
    source, _ = demo.plan(STARTED, EVENT_START)
    document = json.loads(json.dumps(source.as_json()))
    assert document["kind"] == "simulated"
    assert document["event_start"] == rfc3339(EVENT_START)
    assert DemoSource.from_json(document) == source


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 0}, "format 0"),
        ({"speed": "fast"}, "speed is not a number"),
        ({"speed": float("nan")}, "speed is not a number"),
        ({"event_start": "yesterday"}, "event_start 'yesterday'"),
        ({"drop": {"channel": "email", "factor": 0.3}}, "segments is not a list"),
        ({"drop": []}, "drop is not a JSON object"),
    ],
)
def test_a_bad_description_is_one_line(change: dict[str, object], message: str) -> None:
    source, _ = demo.plan(STARTED, EVENT_START)
    with pytest.raises(SourceError, match=message) as raised:
        DemoSource.from_json({**source.as_json(), **change})
    assert "\n" not in str(raised.value)


def test_the_worker_reads_the_description_again_when_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "source.json"
    reader = DemoSourceFile(path)
    assert reader.current() is None  # not written yet
    first, _ = demo.plan(STARTED, EVENT_START)
    path.write_text(json.dumps(first.as_json()))
    assert reader.current() == first
    second, _ = demo.plan(STARTED + 5_000, EVENT_START + 3_600_000)
    path.write_text(json.dumps(second.as_json()))
    os.utime(path, (1, 1))  # a changed file whatever the file system's time resolution
    assert reader.current() == second
    path.write_text("{not json")
    os.utime(path, (2, 2))
    with caplog.at_level(logging.WARNING):
        assert reader.current() is None
    assert "JSONDecodeError" in caplog.text and "\n" not in caplog.text.strip()
    assert DemoSourceFile(None).current() is None


def _previous_demo(data_dir: Path, state: object | None) -> None:
    log_dir = data_dir.resolve() / "kafka" / "kraft-logs"
    log_dir.mkdir(parents=True)
    (log_dir / "segment").write_bytes(b"x" * 10_000)
    if state is not None:
        (data_dir / "demo").mkdir()
        (data_dir / "demo" / "state.json").write_text(json.dumps(state))


def test_a_previous_demo_is_resumed_after_its_stream_time(tmp_path: Path) -> None:
    _previous_demo(
        tmp_path, {"format": demo.STATE_FORMAT, "stream_time": "2026-12-05T17:20:00.000Z"}
    )
    start = demo.decide(tmp_path, fresh=False)
    # The next whole hour after it, so that every event it sends is on time.
    assert start.event_start_ms == parse_ts("2026-12-05T18:00:00Z")
    assert start.says.startswith("resuming") and "2026-12-05T17:20:00.000Z" in start.says


@pytest.mark.parametrize(
    ("state", "fresh", "says"),
    [
        (None, False, "older format"),
        ({"format": 0, "stream_time": "2026-12-05T17:20:00Z"}, False, "older format"),
        ({"format": demo.STATE_FORMAT, "stream_time": "soon"}, False, "older format"),
        ({"format": demo.STATE_FORMAT, "stream_time": "2026-12-05T17:20:00Z"}, True, "--fresh"),
    ],
)
def test_a_previous_demo_is_removed_and_the_demo_says_why(
    tmp_path: Path, state: object | None, fresh: bool, says: str
) -> None:
    _previous_demo(tmp_path, state)
    start = demo.decide(tmp_path, fresh=fresh)
    assert start.event_start_ms is None
    assert start.says.startswith("starting clean") and says in start.says


def test_a_huge_previous_demo_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _previous_demo(tmp_path, {"format": demo.STATE_FORMAT, "stream_time": "2026-12-05T17:20:00Z"})
    monkeypatch.setattr(demo, "RESUMABLE_BYTES", 5_000)
    start = demo.decide(tmp_path, fresh=False)
    assert start.event_start_ms is None and "longer to load back" in start.says


def test_segments_kafka_deletes_at_its_start_do_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _previous_demo(tmp_path, {"format": demo.STATE_FORMAT, "stream_time": "2026-12-05T17:20:00Z"})
    log_dir = tmp_path.resolve() / "kafka" / "kraft-logs"
    (log_dir / "00000000000000000000.log.deleted").write_bytes(b"x" * 20_000)
    (log_dir / "00000000000000000000.log.cleaned").write_bytes(b"x" * 20_000)
    monkeypatch.setattr(demo, "RESUMABLE_BYTES", 32_768)  # the segment and state fit
    start = demo.decide(tmp_path, fresh=False)
    assert start.says.startswith("resuming")


def test_no_previous_demo_starts_clean(tmp_path: Path) -> None:
    start = demo.decide(tmp_path, fresh=False)
    assert start.event_start_ms is None and "no previous demo data" in start.says
