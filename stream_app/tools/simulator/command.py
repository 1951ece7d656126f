"""`upsell-stream simulate`: a scenario's messages to Kafka, then its ground truth on stdout.

The world and its truth are in scenario.py; this module only reads the options, paces and
produces the messages, reports progress on stderr and prints the truth as JSON.

`--rate` counts messages (offers, purchases, duplicates and malformed ones alike). With
`--duration`, the number of offers is sized so that the whole stream, about 3.2 messages
per offer, takes `--duration` seconds at `--rate`.

Exit codes: 0 every message acknowledged and the truth printed; 1 Kafka unreachable, a
message refused or the truth file not written; 2 bad options; 130 interrupted (no truth,
since the stream stopped half-way).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from stream_app.domain.events import InvalidEvent, parse_ts
from stream_app.runtime.kafka_clients import describe_error, make_producer, quiet_kafka_logs
from stream_app.runtime.topics import TopicsError, ensure_topics, topic_specs
from stream_app.settings import Settings
from stream_app.tools.simulator.scenario import (
    CHANNELS,
    DEFAULT_MAX_DELAY_MS,
    RateDrop,
    ScenarioConfig,
    ScenarioError,
    Simulation,
    expected_messages_per_offer,
    generate,
)

if TYPE_CHECKING:
    from kafka import KafkaProducer

DEFAULT_COUNT = 10_000
CONNECT_TIMEOUT_S = 15.0
# A missing topic with auto-creation off shows up as a send blocked on metadata.
SEND_BLOCK_TIMEOUT_S = 30.0
FLUSH_TIMEOUT_S = 300.0
PROGRESS_EVERY_S = 5.0
# After a stall the pacer may catch up by this much of a second's worth at most.
BURST_S = 0.05
# Sleeping for less costs more than it is worth at high rates; the bucket absorbs it.
MIN_SLEEP_S = 0.005
PREFIX = "upsell-stream simulate"


class OptionError(ValueError):
    """An option the simulator cannot use; the message is one line."""


class SimulateError(RuntimeError):
    """Kafka could not take the stream; the message is one line."""


@dataclass(frozen=True)
class SimulateOptions:
    config: ScenarioConfig
    rate: float
    truth_file: Path | None
    # Keys drawn at random instead of the customer_id: the worker must not rely on keys.
    random_keys: bool = False


def parse_options(args: argparse.Namespace, settings: Settings, now_ms: int) -> SimulateOptions:
    rate = float(args.rate)
    if not math.isfinite(rate) or rate < 0:
        raise OptionError(
            f"--rate {args.rate}: give messages per second, or 0 for as fast as Kafka takes them"
        )
    if args.duration is not None:
        if args.count is not None:
            raise OptionError("give --count or --duration, not both")
        if not math.isfinite(args.duration) or args.duration <= 0:
            raise OptionError(f"--duration {args.duration}: give a number of seconds above 0")
        if rate <= 0:
            raise OptionError("--duration needs --rate above 0 (messages per second)")
    if args.count is not None and args.count < 1:
        raise OptionError(f"--count {args.count}: give a number of offers of 1 or more")
    gap_s = float(args.seconds_per_offer)
    if not math.isfinite(gap_s) or gap_s < 0:
        raise OptionError(f"--seconds-per-offer {args.seconds_per_offer}: give seconds >= 0")
    truth_file = None if args.truth_file is None else Path(args.truth_file)
    if truth_file is not None and not truth_file.parent.is_dir():
        raise OptionError(f"--truth-file {truth_file}: directory {truth_file.parent} not found")
    try:
        config = ScenarioConfig(
            seed=args.seed,
            offers=0,
            customers=args.customers,
            duplicates=args.duplicates,
            malformed=args.malformed,
            start_ms=parse_start(args.start, now_ms),
            offer_gap_ms=round(gap_s * 1000),
            drop=None if args.drop is None else parse_drop(args.drop),
            # Beyond the attribution window a planned conversion would not count.
            max_delay_ms=min(DEFAULT_MAX_DELAY_MS, settings.attribution_window_ms),
            settle_ms=settings.grace_ms,
            offers_topic=settings.topic_offers,
            purchases_topic=settings.topic_purchases,
        )
        if args.duration is not None:
            offers = max(1, round(rate * args.duration / expected_messages_per_offer(config)))
        else:
            offers = DEFAULT_COUNT if args.count is None else args.count
        config = replace(config, offers=offers)
        if args.start is None:
            # The worker rejects events too far ahead of the wall clock (UPSELL_MAX_FUTURE),
            # and a stream runs ahead of it: it ends at about now instead.
            span_ms = offers * config.offer_gap_ms + config.max_delay_ms + config.settle_ms
            config = replace(config, start_ms=parse_start(None, max(0, now_ms - span_ms)))
    except ScenarioError as error:
        raise OptionError(str(error)) from None
    return SimulateOptions(
        config, rate, truth_file, random_keys=bool(getattr(args, "random_keys", False))
    )


def warnings_for(options: SimulateOptions) -> list[str]:
    """Options that work but probably do not do what was meant."""
    config = options.config
    if config.drop is not None and config.drop.after_offers >= config.offers:
        # A warning, not an error: scripts size runs with --duration and may shorten them.
        return [
            f"--drop after {config.drop.after_offers:,} offers, but only {config.offers:,} "
            "are presented: the drop will not happen"
        ]
    return []


def parse_start(text: str | None, now_ms: int) -> int:
    """Event time of the first offer: the given RFC 3339 time, or `now_ms` to the minute."""
    if text is None:
        return now_ms - now_ms % 60_000
    try:
        return parse_ts(text)
    except InvalidEvent:
        raise OptionError(
            f"--start {text!r}: give an RFC 3339 date-time with offset, e.g. 2026-11-22T10:15:00Z"
        ) from None


def parse_drop(text: str) -> RateDrop:
    """CHANNEL:AFTER:FACTOR[:UNTIL], e.g. email:5000:0.3 or email:5000:0.3:9000."""
    parts = text.split(":")
    usage = "give CHANNEL:AFTER:FACTOR or CHANNEL:AFTER:FACTOR:UNTIL, e.g. email:5000:0.3:9000"
    if len(parts) not in (3, 4):
        raise OptionError(f"--drop {text!r}: {usage}")
    channel, after, factor, *until = (part.strip() for part in parts)
    if channel not in CHANNELS:
        raise OptionError(
            f"--drop {text!r}: channel {channel!r} is not one of {', '.join(CHANNELS)}"
        )
    for name, number in (("AFTER", after), *(("UNTIL", u) for u in until)):
        if not (number.isascii() and number.isdigit()):
            raise OptionError(f"--drop {text!r}: {name} {number!r} is not a whole number of offers")
    try:
        multiplier = float(factor)
    except ValueError:
        raise OptionError(f"--drop {text!r}: FACTOR {factor!r} is not a number") from None
    try:
        return RateDrop(channel, int(after), multiplier, int(until[0]) if until else None)
    except ScenarioError as error:
        raise OptionError(f"--drop {text!r}: {error}") from None


class Pacer:
    """A token bucket on the wall clock: `rate` messages per second, bursts bounded."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate * BURST_S)
        self._tokens = 1.0
        self._clock = clock
        self._sleep = sleep
        self._last = clock()

    def acquire(self) -> None:
        if self._rate <= 0:
            return
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1
        if self._tokens < 0:
            self._sleep(max(-self._tokens / self._rate, MIN_SLEEP_S))


class Progress:
    """One line on stderr every PROGRESS_EVERY_S while the stream is being sent."""

    def __init__(
        self,
        simulation: Simulation,
        out: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._simulation = simulation
        self._out = out
        self._clock = clock
        self._started = clock()
        self._next = self._started + PROGRESS_EVERY_S
        self.sent = 0

    def tick(self) -> None:
        self.sent += 1
        if self.sent % 256 == 0 and self._clock() >= self._next:
            self._next += PROGRESS_EVERY_S
            self._report()

    def elapsed(self) -> float:
        return self._clock() - self._started

    def _report(self) -> None:
        elapsed = self.elapsed()
        planned = self._simulation.config.offers
        offers = self._simulation.truth.offers_total
        share = offers / planned if planned else 1.0
        print(
            f"{PREFIX}: {self.sent:,} messages sent, {offers:,} of {planned:,} offers "
            f"({share:.0%}), {self.sent / elapsed if elapsed else 0:,.0f} messages/s",
            file=self._out,
            flush=True,
        )

    def summary(self) -> str:
        truth = self._simulation.truth
        per_topic = ", ".join(f"{truth.messages_sent[t]:,} to {t}" for t in truth.topics)
        return f"{PREFIX}: sent {self.sent:,} messages ({per_topic}) in {self.elapsed():.1f} s"


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        options = parse_options(args, settings, now_ms=time.time_ns() // 1_000_000)
    except OptionError as error:
        print(f"{PREFIX}: {error}", file=sys.stderr)
        return 2
    for warning in warnings_for(options):
        print(f"{PREFIX}: warning: {warning}", file=sys.stderr)
    simulation = generate(options.config)
    progress = Progress(simulation, sys.stderr)
    with quiet_kafka_logs():
        try:
            producer = _connect(settings)
        except SimulateError as error:
            print(f"{PREFIX}: {error}", file=sys.stderr)
            return 1
        try:
            keys = random_keys(options.config.seed) if options.random_keys else None
            _produce(producer, simulation, settings, Pacer(options.rate), progress, keys)
        except SimulateError as error:
            print(f"{PREFIX}: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(
                f"{PREFIX}: interrupted after {progress.sent:,} messages; no ground truth "
                "(the stream stopped half-way)",
                file=sys.stderr,
            )
            return 130
        finally:
            producer.close(timeout=5)
    print(progress.summary(), file=sys.stderr)
    text = json.dumps(simulation.truth.as_json(), indent=2)
    # stdout first: the events are in Kafka already, their truth must not be lost.
    print(text, flush=True)
    if options.truth_file is not None:
        try:
            options.truth_file.write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            print(
                f"{PREFIX}: could not write {options.truth_file}: {error.strerror or error}",
                file=sys.stderr,
            )
            return 1
    return 0


def _connect(settings: Settings) -> KafkaProducer:
    from kafka.errors import KafkaError

    # The broker would otherwise create a missing input topic on the first send, with its
    # default partition count rather than the configured one.
    inputs = [spec for spec in topic_specs(settings) if spec.name in settings.input_topics]
    try:
        ensure_topics(settings, inputs, connect_timeout_s=CONNECT_TIMEOUT_S)
    except TopicsError as error:
        raise SimulateError(str(error)) from None
    try:
        return make_producer(
            settings,
            bootstrap_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
            max_block_ms=int(SEND_BLOCK_TIMEOUT_S * 1000),
            linger_ms=20,
            batch_size=128 * 1024,
            allow_auto_create_topics=False,
        )
    except (KafkaError, OSError) as error:
        raise SimulateError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {describe_error(error)}; "
            "is it running? try `upsell-stream kafka start`"
        ) from None


def _produce(
    producer: Any,
    simulation: Simulation,
    settings: Settings,
    pacer: Pacer,
    progress: Progress,
    keys: Callable[[], bytes] | None = None,
) -> None:
    from kafka.errors import KafkaError

    topics = {"offers": settings.topic_offers, "purchases": settings.topic_purchases}
    # Delivery failures arrive on the producer's I/O thread; the first one stops the run.
    failures: list[tuple[str, BaseException]] = []
    topic = settings.topic_offers
    try:
        for message in simulation:
            if failures:
                break
            pacer.acquire()
            topic = topics[message.topic_kind]
            key = message.key if keys is None else keys()
            future = producer.send(topic, value=message.value, key=key)
            future.add_errback(_record_failure, failures, topic)
            progress.tick()
        if not failures:
            producer.flush(timeout=FLUSH_TIMEOUT_S)
    except KafkaError as error:
        raise SimulateError(_send_failed(topic, error)) from None
    if failures:
        failed_topic, failure = failures[0]
        raise SimulateError(_send_failed(failed_topic, failure))


def random_keys(seed: int) -> Callable[[], bytes]:
    """Message keys unrelated to the customer, the same for a seed; its own random stream,
    so the events themselves stay those of the seed."""
    rng = random.Random(f"random-keys-{seed}")
    return lambda: rng.getrandbits(64).to_bytes(8, "big").hex().encode()


def _record_failure(
    failures: list[tuple[str, BaseException]], topic: str, error: BaseException
) -> None:
    failures.append((topic, error))


def _send_failed(topic: str, error: BaseException) -> str:
    return (
        f"could not send to {topic}: {describe_error(error)} (is the broker up and the topic "
        "there? `upsell-stream topics create` creates it)"
    )
