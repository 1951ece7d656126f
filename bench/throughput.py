"""Preloading the simulator's events once, and draining them with the bare consumer and workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from bench.common import (
    PARTITIONS,
    BenchError,
    Broker,
    Deployment,
    LagReader,
    Progress,
    machine_busy_seconds,
    truth_mismatches,
)
from stream_app.domain.durations import parse_duration_ms
from stream_app.runtime.hot_path import BatchSender, Record
from stream_app.tools.simulator.scenario import (
    ScenarioConfig,
    Simulation,
    expected_messages_per_offer,
)

# Past this much the broker refuses a produce request by default (message.max.bytes, 1 MB).
_BATCH_BYTES = 900_000
# Grace well beyond the event-time skew between partitions read in one fetch, so that every
# last-touch purchase finds its offer already there, as the simulator intends (as in the e2e
# test of the simulator's truth): then the counters must equal the truth exactly.
# The simulator's closing tail (settle_ms) must reach past the last last-touch purchase by
# that same grace, or the workers never decide those purchases and never reach the truth.
GRACE = "1h"
# The simulated streams run ahead of the wall clock (an event-second per offer).
WORKER_ENV = {"UPSELL_GRACE": GRACE, "UPSELL_MAX_FUTURE": "off"}
# Well past the longest a broker holds a worker's fetch (hot_path.FETCH_MAX_WAIT_MS).
_FETCHES_ANSWERED_S = 1.0
# How often the clock's end is looked for: a drain of the --quick data takes about a
# second, so 0.1 s between looks was up to a tenth of the figure.
_POLL_S = 0.02


@dataclass(frozen=True)
class Dataset:
    offers_topic: str
    purchases_topic: str
    truth: dict[str, Any]

    @property
    def messages(self) -> int:
        return sum(self.truth["messages_sent"].values())

    @property
    def topics(self) -> list[str]:
        return [self.offers_topic, self.purchases_topic]


def scenario(
    events: int, seed: int, offers_topic: str, purchases_topic: str, start_ms: int | None = None
) -> ScenarioConfig:
    """A realistic simulator mix of about `events` messages, over a customer base that
    gives customers several offers each."""
    probe = ScenarioConfig(seed=seed)
    offers = max(1, round(events / expected_messages_per_offer(probe)))
    config = ScenarioConfig(
        seed=seed,
        offers=offers,
        customers=max(1_000, offers // 6),
        offers_topic=offers_topic,
        purchases_topic=purchases_topic,
        settle_ms=parse_duration_ms(GRACE),
    )
    if start_ms is not None:
        from dataclasses import replace

        config = replace(config, start_ms=start_ms)
    return config


def create_topics(broker: Broker, names: list[str]) -> None:
    admin = broker.admin()
    try:
        for name in names:
            try:
                admin.create_topics([NewTopic(name, PARTITIONS, 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def preload(broker: Broker, events: int, seed: int, progress: Progress) -> Dataset:
    """The simulator's stream in two input topics, made once per (events, seed) and reused."""
    name = f"bench-in-{events}-s{seed}-g{GRACE}"
    offers_topic, purchases_topic = f"{name}.offers", f"{name}.purchases"
    marker = broker.data_dir / "preloaded" / f"{name}.truth.json"
    if marker.exists():
        truth = json.loads(marker.read_text())
        dataset = Dataset(offers_topic, purchases_topic, truth)
        ends = broker.end_offsets(dataset.topics)
        if sum(ends.values()) == dataset.messages:
            progress.done(f"reusing {dataset.messages:,} preloaded events in {name}.*")
            return dataset
        raise BenchError(
            f"{name}.* holds {sum(ends.values())} messages, not "
            f"{dataset.messages}: remove {broker.data_dir} and run again"
        )
    config = scenario(events, seed, offers_topic, purchases_topic)
    create_topics(broker, [offers_topic, purchases_topic])
    simulation = Simulation(config)
    started = time.monotonic()
    sent = asyncio.run(_produce_all(broker, simulation, progress, started))
    simulation.truth.complete = True
    truth = simulation.truth.as_json()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(truth))
    progress.done(
        f"preloaded {sent:,} events in {time.monotonic() - started:.0f} s "
        f"({name}.*, {PARTITIONS} partitions each)"
    )
    return Dataset(offers_topic, purchases_topic, truth)


async def _produce_all(
    broker: Broker, simulation: Simulation, progress: Progress, started: float
) -> int:
    # Keyed as the simulator keys them (murmur2, as Kafka's own clients).
    producer = _producer(broker)
    await producer.start()
    try:
        sender = BatchSender(producer)
        sent = 0
        config = simulation.config
        records: list[Record] = []
        for message in simulation:
            topic = (
                config.offers_topic if message.topic_kind == "offers" else config.purchases_topic
            )
            key = message.key
            partition = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS if key else sent % PARTITIONS
            records.append((topic, partition, key, message.value, None))
            sent += 1
            if sent % 10_000 == 0:
                await sender.send(records)
                records = []
                elapsed = time.monotonic() - started
                progress(
                    f"preload: {sent:,} events generated and sent "
                    f"({sent / elapsed:,.0f}/s; generated once, then reused)"
                )
        await sender.send(records)
        await sender.flush()
        return sent
    finally:
        await producer.stop()


def _producer(broker: Broker) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap,
        acks=1,
        max_request_size=_BATCH_BYTES + 100_000,
        max_batch_size=_BATCH_BYTES,
    )


def bare_consumer(broker: Broker, dataset: Dataset, progress: Progress) -> float:
    """Events/s of aiokafka's getmany + json.loads over the whole dataset: the ceiling."""
    return asyncio.run(_bare(broker, dataset, progress))


async def _bare(broker: Broker, dataset: Dataset, progress: Progress) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for topic in dataset.topics for p in range(PARTITIONS)
        ]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        total = sum(ends.values())
        loads = json.loads
        seen = 0
        started = time.monotonic()
        while seen < total:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in fetched.values():
                for record in records:
                    try:
                        loads(record.value)
                    except ValueError:
                        pass  # the simulator's malformed messages: parsed all the same
                seen += sum(len(records) for records in fetched.values())
            progress(f"bare consumer: {seen:,}/{total:,} events")
        elapsed = time.monotonic() - started
    finally:
        await consumer.stop()
    return float(total / elapsed)


@dataclass(frozen=True)
class WorkerRun:
    workers: int
    events: int
    seconds: float
    rss: list[int]
    total_seconds: float
    # CPU seconds the workers used from the start of the clock to its end (all threads).
    cpu_seconds: float = 0.0
    # How long copying the events into the workers' topics took: consume and produce each
    # record once, with nothing in between (the floor of any stage that forwards records).
    copy_seconds: float = 0.0
    # The deployment's name: its topics are named after it.
    name: str = ""
    # CPU seconds the broker used over the same time: with the workers', what the whole
    # job took of the machine's cores.
    broker_cpu_seconds: float = 0.0
    # From the start of the clock until every input event was validated: the steady drain,
    # without the pipeline's tail (the last partials to the board, the last commits), which
    # takes about as long whatever the number of workers.
    inputs_seconds: float = 0.0
    # CPU seconds the whole machine spent busy over the clock, by any process.
    machine_busy_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def inputs_rate(self) -> float:
        return self.events / self.inputs_seconds if self.inputs_seconds else 0.0

    @property
    def tail_seconds(self) -> float:
        """From every input event validated to lag 0 and exact counts."""
        return self.seconds - self.inputs_seconds

    @property
    def copy_rate(self) -> float:
        return self.events / self.copy_seconds if self.copy_seconds else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / max(1, self.events) * 1e6

    @property
    def broker_cpu_us_per_event(self) -> float:
        return self.broker_cpu_seconds / max(1, self.events) * 1e6

    @property
    def cores_busy(self) -> float:
        """Workers' and broker's CPU over the clock's wall time: how many cores they kept
        busy (at most the machine's count, less what the bench and others took)."""
        return (self.cpu_seconds + self.broker_cpu_seconds) / self.seconds

    @property
    def others_cores_busy(self) -> float:
        """How many cores other processes (the bench's own polling included) kept busy
        over the clock: on a shared machine, what the run could not have."""
        return max(0.0, self.machine_busy_seconds / self.seconds - self.cores_busy)


def run_workers(
    broker: Broker,
    dataset: Dataset,
    count: int,
    progress: Progress,
    timeout: float,
    profile: Any = None,
) -> WorkerRun:
    """Drain the dataset with `count` workers of a new group until lag 0 and exact counts.

    The workers read input topics of their own, empty until every worker owns partitions.
    Then the workers are stopped (SIGSTOP), the preloaded events are copied in, partition
    for partition, and the workers go on (SIGCONT) with the clock started: they find every
    event in Kafka at once, as after a preload. (On the preloaded topics themselves, the
    first worker to join drained a short dataset alone before the second had partitions;
    events copied in while the workers ran came partition by partition, hours of event
    time apart, and a worker took the partitions that had caught up for live ones, so
    their records arrived late.) The clock stops when the group has committed everything
    on every stage and its counters equal the simulator's truth; the moment every input
    event was validated (the workers' /healthz events_in) is taken on the way.
    """
    name = f"bench-{uuid.uuid4().hex[:8]}"
    deployment = Deployment(
        broker, f"{name}.offers", f"{name}.purchases", extra_env=dict(WORKER_ENV), name=name
    )
    targets = {
        dataset.offers_topic: deployment.offers_topic,
        dataset.purchases_topic: deployment.purchases_topic,
    }
    truth = _renamed(dataset.truth, targets)
    create_topics(broker, list(targets.values()))
    launched = time.monotonic()
    lag = LagReader(deployment)
    try:
        for _ in range(count):
            deployment.start_worker()
        if profile is not None:
            profile(deployment.workers[0].pid)

        def all_assigned() -> bool:
            healths = [deployment.health(i) for i in range(count)]
            return all(h is not None and h.get("partitions") for h in healths)

        deadline = time.monotonic() + timeout
        while not all_assigned():
            if time.monotonic() > deadline:
                raise BenchError(f"{count} worker(s) did not get partitions in {timeout:.0f} s")
            progress(f"{count} worker(s): starting")
            time.sleep(0.05)
        progress(f"{count} worker(s): copying the {dataset.messages:,} events into their topics")
        for worker in deployment.workers:
            os.kill(worker.pid, signal.SIGSTOP)
        # A fetch the broker answered while the copy was under way brought the partitions
        # copied so far and said the others were empty: true when answered, but the
        # worker, going on, released those records as if the others' records were live
        # arrivals, hours of event time apart (1 run in 4, thousands of events late).
        # The fetches in flight are answered, empty, before the copy begins.
        time.sleep(_FETCHES_ANSWERED_S)
        copy_started = time.monotonic()
        try:
            asyncio.run(_copy(broker, targets))
        finally:
            copy_seconds = time.monotonic() - copy_started
            for worker in deployment.workers:
                os.kill(worker.pid, signal.SIGCONT)
        started = time.monotonic()
        cpu_before = deployment.cpu_seconds()
        broker_cpu_before = broker.cpu_seconds()
        machine_before = machine_busy_seconds()
        total = dataset.messages
        inputs_read: float | None = None
        while True:
            if time.monotonic() > deadline:
                raise BenchError(f"{count} worker(s) did not finish in {timeout:.0f} s")
            validated = deployment.events_in() if inputs_read is None else total
            if validated >= total and inputs_read is None:
                inputs_read = time.monotonic()
            current = lag.lag()
            if current == 0 and inputs_read is not None:
                finished = time.monotonic()
                cpu_after = deployment.cpu_seconds()
                broker_cpu_after = broker.cpu_seconds()
                machine_after = machine_busy_seconds()
                problems = truth_mismatches(deployment, truth)
                if not problems:
                    break
                progress(f"{count} worker(s): lag 0, waiting for {', '.join(problems)}")
            else:
                progress(
                    f"{count} worker(s): {validated:,}/{total:,} events validated, "
                    f"lag {current:,} on all stages"
                )
            time.sleep(_POLL_S)
        rss = deployment.rss_bytes()
        return WorkerRun(
            count,
            total,
            finished - started,
            rss,
            finished - launched,
            cpu_after - cpu_before,
            copy_seconds,
            name,
            broker_cpu_after - broker_cpu_before,
            (inputs_read or finished) - started,
            machine_after - machine_before,
        )
    finally:
        lag.close()
        deployment.stop()


async def _copy(broker: Broker, targets: dict[str, str]) -> None:
    """Every record of the source topics, in order, into the same partition of its target."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = _producer(broker)
    await consumer.start()
    await producer.start()
    try:
        sender = BatchSender(producer)
        partitions = [TopicPartition(topic, p) for topic in targets for p in range(PARTITIONS)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        left = {tp for tp in partitions if ends[tp] > 0}
        while left:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in fetched.items():
                await sender.send(
                    (targets[tp.topic], tp.partition, record.key, record.value, None)
                    for record in records
                )
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        await sender.flush()
    finally:
        await consumer.stop()
        await producer.stop()


def _renamed(truth: dict[str, Any], topics: dict[str, str]) -> dict[str, Any]:
    """The truth with its counts by input topic under the topics the workers read."""
    by_topic = ("messages_sent", "duplicates", "rejected")
    return {
        key: (
            {topics.get(topic, topic): value for topic, value in truth[key].items()}
            if key in by_topic
            else value
        )
        for key, value in truth.items()
    }


def dataset_dir(broker: Broker) -> Path:
    return broker.data_dir / "preloaded"
