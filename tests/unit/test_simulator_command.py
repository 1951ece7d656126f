"""The `simulate` command's shell: options, pacing, and producing, with a stand-in producer."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_app import cli
from stream_app.settings import Settings
from stream_app.tools.simulator import command
from stream_app.tools.simulator.command import (
    MIN_SLEEP_S,
    OptionError,
    Pacer,
    parse_drop,
    parse_options,
    parse_start,
)
from stream_app.tools.simulator.scenario import RateDrop, expected_messages_per_offer

NOW_MS = 1_795_341_623_456  # 2026-11-22T10:00:23.456Z


def simulate_args(*argv: str) -> Any:
    return cli._build_parser().parse_args(["simulate", *argv])


class FakeFuture:
    def __init__(self, error: BaseException | None) -> None:
        self._error = error

    def add_errback(self, f: Callable[..., None], *args: Any) -> FakeFuture:
        if self._error is not None:
            f(*args, self._error)
        return self


class FakeProducer:
    def __init__(self, error: BaseException | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = False
        self.closed = False
        self._error = error

    def send(self, topic: str, value: bytes, key: bytes | None) -> FakeFuture:
        self.sent.append((topic, key, value))
        return FakeFuture(self._error)

    def flush(self, timeout: float | None = None) -> None:
        self.flushed = True

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


@pytest.fixture
def topics_created(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def ensure(settings: Settings, specs: Any, **kwargs: object) -> list[str]:
        calls.append([spec.name for spec in specs])
        return []

    monkeypatch.setattr(command, "ensure_topics", ensure)
    return calls


@pytest.fixture
def no_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("bad options must be refused before connecting")

    monkeypatch.setattr(command, "make_producer", refuse)


@pytest.mark.parametrize(
    "argv",
    [
        ["--rate", "-1"],
        ["--rate", "nan"],
        ["--duration", "10"],
        ["--duration", "0", "--rate", "5"],
        ["--count", "5", "--duration", "3", "--rate", "2"],
        ["--count", "0"],
        ["--customers", "0"],
        ["--duplicates", "2"],
        ["--malformed", "-0.5"],
        ["--seconds-per-offer", "-1"],
        ["--start", "yesterday"],
        ["--start", "2026-11-22T10:00:00"],
        ["--drop", "email"],
        ["--drop", "fax:10:0.5"],
        ["--drop", "email:ten:0.5"],
        ["--drop", "email:10:half"],
        ["--drop", "email:10:-1"],
        ["--drop", "call_center:10:5"],
        ["--truth-file", "/nonexistent/dir/truth.json"],
    ],
)
def test_bad_options_give_one_line_and_exit_2(
    argv: list[str], no_kafka: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["simulate", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("upsell-stream simulate: "), captured.err


def test_defaults() -> None:
    options = parse_options(simulate_args(), Settings(), NOW_MS)
    config = options.config
    assert config.offers == 10_000
    assert config.seed == 1
    # The stream ends at about now: 10,000 offers a second apart, then 30 min of
    # conversions and 1 min of grace.
    start_ms = NOW_MS - 10_000 * 1_000 - 30 * 60_000 - 60_000
    assert config.start_ms == start_ms - start_ms % 60_000
    assert config.offer_gap_ms == 1_000
    assert config.drop is None
    assert (config.offers_topic, config.purchases_topic) == ("upsell.offers", "upsell.purchases")
    assert config.max_delay_ms == 30 * 60_000
    assert options.rate == 0 and options.truth_file is None


def test_options_reach_the_scenario(tmp_path: Path) -> None:
    settings = Settings(
        topic_offers="o", topic_purchases="p", attribution_window_ms=600_000, grace_ms=3_600_000
    )
    args = simulate_args(
        "--count",
        "1234",
        "--seed",
        "7",
        "--customers",
        "99",
        "--duplicates",
        "0.1",
        "--malformed",
        "0.2",
        "--start",
        "2026-11-22T10:15:00.5+01:00",
        "--seconds-per-offer",
        "0.25",
        "--drop",
        "in_app:600:0.5",
        "--truth-file",
        str(tmp_path / "t.json"),
        "--rate",
        "50",
    )
    options = parse_options(args, settings, NOW_MS)
    config = options.config
    assert (config.offers, config.seed, config.customers) == (1234, 7, 99)
    assert (config.duplicates, config.malformed) == (0.1, 0.2)
    assert config.start_ms == 1_795_338_900_500  # 09:15:00.5Z
    assert config.offer_gap_ms == 250
    assert config.drop == RateDrop("in_app", 600, 0.5)
    assert (config.offers_topic, config.purchases_topic) == ("o", "p")
    # A conversion later than the attribution window would not count.
    assert config.max_delay_ms == 600_000
    # The stream must run on past the last last-touch purchase by the worker's grace.
    assert config.settle_ms == 3_600_000
    assert options.rate == 50 and options.truth_file == tmp_path / "t.json"


def test_duration_sizes_the_run_to_last_that_long_at_the_rate() -> None:
    options = parse_options(simulate_args("--rate", "1000", "--duration", "60"), Settings(), NOW_MS)
    messages = options.config.offers * expected_messages_per_offer(options.config)
    assert messages == pytest.approx(60_000, abs=5)


def test_parse_drop_and_start() -> None:
    assert parse_drop("sms:0:0") == RateDrop("sms", 0, 0.0)
    assert parse_drop(" web : 10 : 0.25 ") == RateDrop("web", 10, 0.25)
    assert parse_drop("email:10:0.3:25") == RateDrop("email", 10, 0.3, until_offers=25)
    for wrong in ("email:10:0.3:10", "email:10:0.3:x", "email:10:0.3:\u00b2", "email:1:1:2:3"):
        with pytest.raises(OptionError):
            parse_drop(wrong)
    assert parse_start(None, 60_000 * 5 + 59_999) == 60_000 * 5
    assert parse_start("1970-01-01T00:01:00Z", NOW_MS) == 60_000
    with pytest.raises(OptionError):
        parse_start("1795341600000", NOW_MS)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("rate", [1.0, 37.0, 8_000.0, 250_000.0])
def test_pacer_holds_the_rate(rate: float) -> None:
    clock = FakeClock()
    pacer = Pacer(rate, clock=clock, sleep=clock.sleep)
    start = clock.now
    n = int(min(rate * 20, 200_000))
    for _ in range(n):
        pacer.acquire()
        clock.now += 1e-7  # the cost of sending
    elapsed = clock.now - start
    assert elapsed == pytest.approx(n / rate, rel=0.01, abs=MIN_SLEEP_S + 1 / rate)
    assert min(clock.slept) >= min(MIN_SLEEP_S, 1 / rate)


def test_pacer_bursts_are_bounded_after_a_stall() -> None:
    clock = FakeClock()
    pacer = Pacer(1_000.0, clock=clock, sleep=clock.sleep)
    pacer.acquire()
    clock.now += 100.0  # the broker stalled for 100 s
    sent_without_sleeping = 0
    while not clock.slept:
        pacer.acquire()
        sent_without_sleeping += 1
    assert sent_without_sleeping <= 1_000 * command.BURST_S + 1


def test_pacer_with_no_rate_never_sleeps() -> None:
    clock = FakeClock()
    pacer = Pacer(0.0, clock=clock, sleep=clock.sleep)
    for _ in range(10_000):
        pacer.acquire()
    assert clock.slept == []


def test_run_sends_every_message_and_prints_the_truth(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    topics_created: list[list[str]],
) -> None:
    producer = FakeProducer()
    overrides: dict[str, object] = {}

    def make(settings: Settings, **kwargs: object) -> FakeProducer:
        overrides.update(kwargs)
        return producer

    monkeypatch.setattr(command, "make_producer", make)
    settings = Settings(topic_offers="my.offers", topic_purchases="my.purchases")
    truth_file = tmp_path / "truth.json"
    args = simulate_args(
        "--count",
        "300",
        "--seed",
        "7",
        "--truth-file",
        str(truth_file),
        "--duplicates",
        "0.1",
        "--malformed",
        "0.1",
    )
    assert command.run(args, settings) == 0
    captured = capsys.readouterr()
    truth = json.loads(captured.out)
    assert truth == json.loads(truth_file.read_text())
    assert truth["complete"] is True and truth["offers"] == 300
    assert producer.flushed and producer.closed
    assert overrides["bootstrap_timeout_ms"] == command.CONNECT_TIMEOUT_S * 1000
    assert overrides["allow_auto_create_topics"] is False
    assert topics_created == [["my.offers", "my.purchases"]]
    sent_per_topic = {"my.offers": 0, "my.purchases": 0}
    for topic, _, _ in producer.sent:
        sent_per_topic[topic] += 1
    assert truth["messages_sent"] == sent_per_topic
    assert "sent " in captured.err.splitlines()[-1]


def test_a_drop_that_cannot_happen_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    topics_created: list[list[str]],
) -> None:
    monkeypatch.setattr(command, "make_producer", lambda settings, **kwargs: FakeProducer())
    assert command.run(simulate_args("--count", "100", "--drop", "email:100:0.5"), Settings()) == 0
    captured = capsys.readouterr()
    assert "warning: --drop after 100 offers, but only 100" in captured.err
    drop = json.loads(captured.out)["drop"]
    assert drop["from_ts"] is None and drop["offers_after"] == {}


def test_a_refused_message_gives_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    topics_created: list[list[str]],
) -> None:
    from kafka.errors import KafkaTimeoutError

    producer = FakeProducer(KafkaTimeoutError("Batch expired"))
    monkeypatch.setattr(command, "make_producer", lambda settings, **kwargs: producer)
    assert command.run(simulate_args("--count", "50"), Settings()) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(producer.sent) == 1 and producer.closed
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "could not send to upsell.offers" in lines[0]


def test_an_unreachable_broker_gives_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(command, "CONNECT_TIMEOUT_S", 1.0)
    settings = Settings(bootstrap_servers=f"127.0.0.1:{port}")
    assert command.run(simulate_args("--count", "10"), settings) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"upsell-stream simulate: cannot reach Kafka at 127.0.0.1:{port}")
