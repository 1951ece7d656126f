"""Time from produce to effect on /metrics at a fixed offered load.

Method: a paced producer sends the simulator's stream at the offered load and, every
PROBE_EVERY_S, one probe offer among it. Probes are offers of channel `bench_probe` and
segment `p<k>`, from a customer whose key hashes to partition k of the input topic and of
the internal topic alike, so that each partition's probes stay in order end to end and
`upsell_offers_presented_total{channel="bench_probe",segment="p<k>"}` counts exactly the
probes of partition k that reached the metrics. A poller reads /metrics every POLL_S;
when that counter goes from a to b, probes a+1..b of partition k took effect at the
moment the response arrived. A probe's latency is that moment minus the moment just
before it was handed to the producer. The poll interval bounds the error (a probe is
seen at most one poll plus one scrape late).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from bench.common import PARTITIONS, BenchError, Broker, Deployment, Progress
from bench.throughput import WORKER_ENV, create_topics, scenario
from stream_app.tools.simulator.scenario import Simulation

PROBE_EVERY_S = 0.02
POLL_S = 0.01
PROBE_CHANNEL = "bench_probe"
_PROBE_LINE = re.compile(
    r'^upsell_offers_presented_total\{channel="bench_probe",segment="p(\d+)"\} (\S+)$', re.M
)


@dataclass(frozen=True)
class LatencyRun:
    offered: int
    achieved: float
    probes: int
    p50: float
    p95: float
    p99: float
    worst: float


def probe_customers() -> list[str]:
    """One customer id per partition: probes of one partition stay in order."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < PARTITIONS:
        customer = f"bench-probe-{n}"
        found.setdefault((murmur2(customer.encode()) & 0x7FFFFFFF) % PARTITIONS, customer)
        n += 1
    return [found[p] for p in range(PARTITIONS)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class _Poller(threading.Thread):
    def __init__(self, deployment: Deployment) -> None:
        super().__init__(daemon=True)
        self._deployment = deployment
        self.stop = threading.Event()
        # Per partition: the moments at which each successive probe was first seen.
        self.seen: list[list[float]] = [[] for _ in range(PARTITIONS)]
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                text = self._deployment.metrics_text(0, timeout=5)
                moment = time.monotonic()
                for match in _PROBE_LINE.finditer(text):
                    partition, count = int(match[1]), int(float(match[2]))
                    seen = self.seen[partition]
                    seen.extend([moment] * (count - len(seen)))
                time.sleep(POLL_S)
        except BaseException as error:  # reported by the caller
            self.error = error


def run_latency(
    broker: Broker, loads: list[int], seconds: float, seed: int, progress: Progress
) -> list[LatencyRun]:
    """One worker of a new group, the offered loads one after the other on fresh topics."""
    name = f"bench-lat-{uuid.uuid4().hex[:8]}"
    offers_topic, purchases_topic = f"{name}.offers", f"{name}.purchases"
    create_topics(broker, [offers_topic, purchases_topic])
    deployment = Deployment(broker, offers_topic, purchases_topic, extra_env=dict(WORKER_ENV))
    total = int(sum(loads) * seconds * 1.05) + 1_000
    progress(f"latency: generating {total:,} events", force=True)
    # Event time starts at the wall clock, as a live stream's would.
    simulation = Simulation(
        scenario(total, seed, offers_topic, purchases_topic, start_ms=int(time.time() * 1000))
    )
    messages: list[tuple[str, bytes | None, bytes]] = [
        (m.topic_kind, m.key, m.value) for m in simulation
    ]
    try:
        deployment.start_worker()
        deadline = time.monotonic() + 180
        while True:
            health = deployment.health(0)
            if health is not None and len(health.get("partitions", ())) == PARTITIONS:
                break
            if time.monotonic() > deadline:
                raise BenchError("the latency worker did not get its partitions in 180 s")
            progress("latency: starting the worker")
            time.sleep(0.1)
        poller = _Poller(deployment)
        poller.start()
        try:
            runs = asyncio.run(
                _offer_loads(broker, deployment, poller, messages, loads, seconds, progress)
            )
        finally:
            poller.stop.set()
            poller.join(timeout=10)
        return runs
    finally:
        deployment.stop()


async def _offer_loads(
    broker: Broker,
    deployment: Deployment,
    poller: _Poller,
    messages: list[tuple[str, bytes | None, bytes]],
    loads: list[int],
    seconds: float,
    progress: Progress,
) -> list[LatencyRun]:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=2)
    await producer.start()
    customers = probe_customers()
    sent_at: list[list[float]] = [[] for _ in range(PARTITIONS)]
    stream = iter(messages)
    runs = []
    try:
        for load in loads:
            first = [len(times) for times in sent_at]
            achieved = await _pace(
                producer, deployment, stream, load, seconds, customers, sent_at, progress
            )
            await producer.flush()
            # Every probe of this load, then the next load on a worker at rest.
            deadline = time.monotonic() + 120
            while any(len(poller.seen[p]) < len(sent_at[p]) for p in range(PARTITIONS)):
                if poller.error is not None:
                    raise BenchError(f"reading /metrics failed: {poller.error}")
                if time.monotonic() > deadline:
                    raise BenchError(f"probes at {load}/s did not all reach /metrics in 120 s")
                progress(f"latency {load:,}/s: waiting for the last probes")
                await asyncio.sleep(0.05)
            latencies = [
                seen - sent
                for p in range(PARTITIONS)
                for sent, seen in zip(
                    sent_at[p][first[p] :], poller.seen[p][first[p] :], strict=True
                )
            ]
            runs.append(
                LatencyRun(
                    load,
                    achieved,
                    len(latencies),
                    percentile(latencies, 0.5),
                    percentile(latencies, 0.95),
                    percentile(latencies, 0.99),
                    max(latencies),
                )
            )
            progress.done(
                f"latency at {load:,} events/s offered ({achieved:,.0f} achieved): "
                f"p50 {runs[-1].p50 * 1000:.0f} ms, p95 {runs[-1].p95 * 1000:.0f} ms, "
                f"p99 {runs[-1].p99 * 1000:.0f} ms over {len(latencies)} probes"
            )
            await asyncio.sleep(1.0)
    finally:
        await producer.stop()
    return runs


async def _pace(
    producer: AIOKafkaProducer,
    deployment: Deployment,
    stream: Iterator[tuple[str, bytes | None, bytes]],
    load: int,
    seconds: float,
    customers: list[str],
    sent_at: list[list[float]],
    progress: Progress,
) -> float:
    """Send `load` events a second for `seconds`, and a probe every PROBE_EVERY_S."""
    topics = {"offers": deployment.offers_topic, "purchases": deployment.purchases_topic}
    started = time.monotonic()
    next_probe = started
    sent = 0
    probes = 0
    last_ts = int(time.time() * 1000)
    while (now := time.monotonic()) - started < seconds:
        due = int((now - started) * load) - sent
        for _ in range(due):
            kind, key, value = next(stream)
            await producer.send(topics[kind], value=value, key=key)
            sent += 1
            if kind == "offers" and sent % 64 == 0:
                try:
                    ts = json.loads(value).get("ts")
                    last_ts = ts if isinstance(ts, int) else last_ts
                except (ValueError, AttributeError):
                    pass
        if now >= next_probe:
            partition = probes % PARTITIONS
            customer = customers[partition]
            probe_id = uuid.uuid4().hex
            body = json.dumps(
                {
                    "event_id": probe_id,
                    "offer_id": probe_id,
                    "customer_id": customer,
                    "channel": PROBE_CHANNEL,
                    "segment": f"p{partition}",
                    "ts": last_ts,
                }
            ).encode()
            sent_at[partition].append(time.monotonic())
            await producer.send(deployment.offers_topic, value=body, key=customer.encode())
            probes += 1
            next_probe += PROBE_EVERY_S
        progress(f"latency {load:,}/s: {sent:,} events, {probes} probes sent")
        await asyncio.sleep(0.002)
    return sent / (time.monotonic() - started)
