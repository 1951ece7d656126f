"""The benchmark, in one command: `python bench/run.py [--events N] [--quick]`.

On the local broker (`upsell-stream kafka start` on its own port and data dir) it preloads
N simulator events once, then measures in the same run: the bare aiokafka consumer (the
ceiling), one worker and two workers draining them until their metrics are final and
exact, the changelog bytes the worker wrote per input byte, the time from produce to
effect on /metrics at fixed offered loads, and memory against keys and open offers.
`--peers`: Quix Streams and stock Faust on the same events beside the bare consumer and one
worker (bench/peers.py). `--only restart`: a worker's restart on the state of N events
(bench/restart.py). The workers log at warn level into <data dir>/logs; set
UPSELL_BENCH_LOG_LEVEL=info to follow a run's rebalances and loads there. See
docs/performance.md for the method and the figures.
Exits non-zero only when something fails to run or a result is wrong, never for slowness.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baselines import kafka_python, stock_faust
from bench.common import ROOT, BenchError, Broker, Progress
from bench.core import measure as measure_core
from bench.latency import LatencyRun, run_latency
from bench.memory import MemoryRun, measure
from bench.peers import expected, grace_ms, run_peer, window_sizes
from bench.profile import top
from bench.restart import CHANGELOG_TABLES, measure_restart, topic_bytes
from bench.restart import report_lines as restart_lines
from bench.throughput import Dataset, WorkerRun, bare_consumer, preload, run_workers

SECTIONS = ("throughput", "baselines", "peers", "scale", "latency", "memory", "restart")
# Baselines and peers take minutes (a stock Faust agent reads about 5,000 events/s, a Faust
# table a tenth of that), and so does a restart on its changelogs: not in --quick.
QUICK_SECTIONS = ("throughput", "scale", "latency", "memory")
# `--peers`: the same run's bare consumer and worker beside the other stream processors.
PEER_SECTIONS = ("throughput", "peers")
# A stock Faust table reads 500 to 1,500 events/s here: some minutes for these.
PEER_EVENTS = 300_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="events to preload and drain (default 1,000,000; --peers "
        f"{PEER_EVENTS:,}; --quick 50,000)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run for CI: fewer events, shorter loads, smaller memory",
    )
    parser.add_argument(
        "--bootstrap",
        default="127.0.0.1:19692",
        help="the local broker's address (its own port: default 19692)",
    )
    parser.add_argument(
        "--data-dir",
        default=str(ROOT / "var" / "bench"),
        help="the broker's data, preloaded events and worker logs",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} "
        "(default all but peers and restart; --quick: throughput, scale, "
        "latency, memory; --peers: throughput, peers)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="Quix Streams and stock Faust on the same events, beside the bare "
        "consumer and one worker (needs pip install -e '.[bench]'); "
        "with --only, adds the peers to those sections",
    )
    parser.add_argument(
        "--loads",
        default="5000,10000,20000",
        help="offered loads for the latency section, events/s",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy record the one-worker run into FILE (raw collapsed stacks); needs py-spy",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--stop-broker",
        action="store_true",
        help="stop the broker at the end even if it was already running",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    events = args.events or (50_000 if args.quick else PEER_EVENTS if args.peers else 1_000_000)
    default = (
        PEER_SECTIONS
        if args.peers
        else QUICK_SECTIONS
        if args.quick
        else [s for s in SECTIONS if s not in ("peers", "restart")]
    )
    only = args.only or ",".join(default)
    sections = [s.strip() for s in only.split(",") if s.strip()]
    if args.peers and "peers" not in sections:
        sections.append("peers")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        print(f"bench/run.py: unknown sections {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    progress = Progress()
    broker = Broker(args.bootstrap, Path(args.data_dir).resolve())
    results: dict[str, Any] = {
        "events": events,
        "quick": args.quick,
        "load_average": _load_average(),
    }
    report: list[str] = []
    started = time.monotonic()
    try:
        progress("starting the local broker", force=True)
        broker.start()
        if {"throughput", "baselines", "peers", "scale"} & set(sections):
            _throughput(broker, events, args, sections, progress, results, report)
        if "restart" in sections:
            dataset = preload(broker, events, args.seed, progress)
            restart = measure_restart(
                broker, dataset, progress, timeout=max(300.0, dataset.messages / 1_000)
            )
            results["restart"] = asdict(restart)
            report.extend(restart_lines(restart))
        if "latency" in sections:
            loads = [int(x) for x in args.loads.split(",") if x.strip()]
            seconds = 4.0 if args.quick else 20.0
            runs = run_latency(broker, loads, seconds, args.seed, progress)
            results["latency"] = [asdict(run) for run in runs]
            report.extend(_latency_lines(runs))
        if "memory" in sections:
            results["memory"] = [asdict(run) for run in _memory(args.quick, progress, report)]
    except BenchError as error:
        progress.done(f"bench/run.py: {error}")
        return 1
    finally:
        if broker.started_here or args.stop_broker:
            broker.stop()
    results["seconds"] = round(time.monotonic() - started, 1)
    results["load_average_end"] = _load_average()
    print(
        "\n".join(
            [
                f"upsell-stream benchmark: {events:,} events, {_machine()}",
                f"load average at start {results['load_average']}, at end "
                f"{results['load_average_end']} (shared machine: compare ratios, not absolutes)",
                *report,
                f"took {results['seconds']:.0f} s",
            ]
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _throughput(
    broker: Broker,
    events: int,
    args: argparse.Namespace,
    sections: list[str],
    progress: Progress,
    results: dict[str, Any],
    report: list[str],
) -> None:
    dataset = preload(broker, events, args.seed, progress)
    timeout = max(300.0, dataset.messages / 1_000)
    broker_cpu_before = broker.cpu_seconds()
    bare = bare_consumer(broker, dataset, progress)
    bare_broker_us = (broker.cpu_seconds() - broker_cpu_before) / dataset.messages * 1e6
    progress.done(f"bare aiokafka consumer: {bare:,.0f} events/s")
    results["bare_events_per_s"] = round(bare)
    report += [
        f"bare aiokafka getmany + json.loads   {bare:>10,.0f} events/s",
        f"  broker CPU {bare_broker_us:,.1f} us per event",
    ]
    if "baselines" in sections:
        python = kafka_python(broker, dataset, progress)
        progress.done(f"kafka-python consumer: {python:,.0f} events/s")
        agent_events = min(dataset.messages, 200_000)
        agent = stock_faust(broker, dataset, agent_events, progress)
        progress.done(f"stock Faust agent: {agent:,.0f} events/s")
        results["kafka_python_events_per_s"] = round(python)
        results["stock_faust_agent_events_per_s"] = round(agent)
        report += [
            f"kafka-python poll + json.loads       {python:>10,.0f} events/s   "
            f"{python / bare:.2f} of the bare consumer",
            f"stock Faust agent (async for), {agent_events // 1000}k {agent:>10,.0f} events/s   "
            f"{agent / bare:.2f} of the bare consumer",
        ]
    if not {"throughput", "scale", "peers"} & set(sections):
        return
    profiler = _Profiler(args.profile) if args.profile else None
    one = run_workers(broker, dataset, 1, progress, timeout, profiler)
    if profiler is not None:
        profiler.finish()
        report += ["py-spy profile of the one-worker run:", *top(Path(args.profile))]
    progress.done(f"one worker: {one.rate:,.0f} events/s, exact")
    results["one_worker"] = asdict(one) | {"rate": round(one.rate)}
    report += [
        f"aiokafka consume + produce (a copy)   {one.copy_rate:>10,.0f} events/s   "
        f"{one.copy_rate / bare:.2f} of the bare consumer (the floor of forwarding a record)",
        f"one worker, lag 0 and exact counts   {one.rate:>10,.0f} events/s   "
        f"{one.rate / bare:.2f} of the bare consumer (target 0.25, stretch 0.5)",
        f"  worker RSS at the end: {one.rss[0] / 2**20:,.0f} MiB "
        f"({one.total_seconds:.1f} s from launch to exact); worker CPU "
        f"{one.cpu_us_per_event:,.0f} us per event ({one.cpu_seconds:.1f} s)",
        f"  {_drain_split(one)}",
        f"  {_machine_share(one)}",
    ]
    report += _bytes_written(broker, one.name, results)
    if "peers" in sections:
        report += _peers(broker, dataset, bare, one.rate, progress, results, timeout)
    # The worker's ceiling whatever Kafka costs: its pure core alone, on the simulator's
    # events, in batches the size of a drain's (bench/core.py).
    core = measure_core(20_000 if args.quick else 100_000, 2_000)
    progress.done(f"pure core alone: {core.rate:,.0f} events/s")
    results["pure_core"] = asdict(core) | {"rate": round(core.rate)}
    report += [
        f"pure core alone, no Kafka            {core.rate:>10,.0f} events/s   "
        f"{core.rate / bare:.2f} of the bare consumer (the most a worker could reach)",
        f"  {core.summary()}",
    ]
    if "scale" in sections:
        two = run_workers(broker, dataset, 2, progress, timeout)
        progress.done(f"two workers: {two.rate:,.0f} events/s, exact")
        results["two_workers"] = asdict(two) | {"rate": round(two.rate)}
        report += [
            f"two workers, lag 0 and exact counts  {two.rate:>10,.0f} events/s   "
            f"{two.rate / one.rate:.2f} x one worker (target 1.7); CPU "
            f"{two.cpu_us_per_event:,.0f} us per event",
            f"  {_drain_split(two)}; the steady drain {two.inputs_rate / one.inputs_rate:.2f} "
            "x one worker's",
            f"  {_machine_share(two)}",
        ]


def _drain_split(run: WorkerRun) -> str:
    """The clock split at the moment every input event was validated: the steady drain,
    then the pipeline's tail, about as long whatever the number of workers (in so short a
    run, a good part of the clock)."""
    return (
        f"every input validated after {run.inputs_seconds:.2f} s "
        f"({run.inputs_rate:,.0f} events/s), then {run.tail_seconds:.2f} s to lag 0 and exact"
    )


def _machine_share(run: WorkerRun) -> str:
    """The broker's CPU beside the workers': on a machine of few cores they share, whether
    a run was bound by the cores rather than by waiting."""
    return (
        f"broker CPU {run.broker_cpu_us_per_event:,.0f} us per event; workers and broker "
        f"kept {run.cores_busy:.2f} of {os.cpu_count()} cores busy, other processes "
        f"{run.others_cores_busy:.2f}"
    )


def _bytes_written(broker: Broker, name: str, results: dict[str, Any]) -> list[str]:
    """What the worker run `name` wrote beside its input, on the broker's disk right after
    the run (Kafka compacts only rolled segments: about what was written)."""
    inputs = topic_bytes(broker, [f"{name}.offers", f"{name}.purchases"])
    changelogs = topic_bytes(broker, [f"{name}-{table}-changelog" for table in CHANGELOG_TABLES])
    internal = topic_bytes(broker, [f"{name}-events-by-customer", f"{name}-window-partials"])
    results["one_worker_bytes"] = {"input": inputs, "changelogs": changelogs, "internal": internal}
    return [
        f"changelog bytes per input byte       {changelogs / max(1, inputs):>10.2f}   "
        f"({changelogs / 1e6:,.1f} MB of changelogs for {inputs / 1e6:,.1f} MB of input; "
        "target at most 2)",
        f"  other internal topics: {internal / max(1, inputs):.2f} per input byte "
        f"({internal / 1e6:,.1f} MB of forwarded events and partials)",
    ]


def _peers(
    broker: Broker,
    dataset: Dataset,
    bare: float,
    ours: float,
    progress: Progress,
    results: dict[str, Any],
    timeout: float,
) -> list[str]:
    if importlib.util.find_spec("quixstreams") is None:
        raise BenchError("--peers needs Quix Streams: .venv/bin/pip install -e '.[bench]'")
    progress("peers: counting the offers they must find", force=True)
    truth = expected(broker, dataset)
    sizes = window_sizes()
    # A stock Faust table reads about 500 events/s: its timeout follows.
    runs = [
        run_peer("peer_quix", "Quix Streams", sizes, broker, dataset, truth, progress, timeout),
        run_peer(
            "peer_faust",
            "stock Faust",
            sizes[:1],
            broker,
            dataset,
            truth,
            progress,
            max(timeout, truth.records / 100),
        ),
    ]
    lines = [
        f"peers on the same {truth.records:,} events ({truth.offer_count:,} offers "
        f"counted exactly by each, grace {grace_ms(truth) / 3_600_000:,.1f} h; ours = one "
        "worker):"
    ]
    for run in runs:
        progress.done(f"{run.name}: {run.rate:,.0f} events/s, exact")
        lines.append(
            f"{run.name + ', ' + ' '.join(run.counts) + ' counts':<37}{run.rate:>10,.0f} "
            f"events/s   {run.rate / bare:.3f} of the bare consumer; ours / it "
            f"{ours / run.rate:.1f} (target 5)"
        )
        results.setdefault("peers", {})[run.name] = {
            "rate": round(run.rate),
            "seconds": round(run.seconds, 2),
        }
    lines += [
        "  Quix Streams: both topics, group_by (channel, segment), one tumbling count per "
        "window size, RocksDB; stock Faust: an agent forwards the offers keyed by (channel, "
        "segment), another adds one to a windowed Table per offer, memory store"
    ]
    return lines


def _latency_lines(runs: list[LatencyRun]) -> list[str]:
    lines = ["produce -> /metrics latency (offered / achieved events/s: p50 p95 p99 max)"]
    for run in runs:
        lines.append(
            f"  {run.offered:>6,} / {run.achieved:>6,.0f}: {run.p50 * 1000:>5.0f} ms "
            f"{run.p95 * 1000:>5.0f} ms {run.p99 * 1000:>5.0f} ms {run.worst * 1000:>5.0f} ms"
            f"  ({run.probes} probes)"
        )
    return lines


def _memory(quick: bool, progress: Progress, report: list[str]) -> list[MemoryRun]:
    small, large = (10_000, 50_000) if quick else (100_000, 1_000_000)
    plan: list[tuple[int, int, int | None]] = [
        (small, 10, None),
        (large, 10, None),
        (small, 1_000, None),
        (small, 10_000, None),
        (small, 10, 1_000),
        (large, 10, 1_000),
    ]
    # The marginal figure is the difference of two RSS readings, which the allocator
    # moves by tens of KB: at 40,000 offers apart it moved 286 to 502 B between CI runs.
    # The median of a few readings per point steadies it (a second each in --quick).
    repeats = 3 if quick else 1
    runs = []
    for offers, keys, customers in plan:
        who = "new customers" if customers is None else f"{customers:,} customers"
        progress(f"memory: {offers:,} open offers over {keys:,} keys, {who}", force=True)
        readings = sorted(
            (measure(offers, keys, customers) for _ in range(repeats)),
            key=lambda run: run.rss_growth,
        )
        runs.append(readings[len(readings) // 2])
    progress.done("memory measured")
    report.append(
        "memory of one partition's state (RSS growth; pure core + store, no Kafka"
        + (f"; the median of {repeats} runs each)" if repeats > 1 else ")")
    )
    for run in runs:
        who = "a new customer each" if run.customers is None else f"{run.customers:,} customers"
        report.append(
            f"  {run.offers:>9,} open offers, {run.keys:>6,} (channel, segment) keys, "
            f"{who:>20}: {run.rss_growth / 2**20:>7.1f} MiB, "
            f"{run.per_offer:>5.0f} B/offer (peak {run.peak_growth / max(1, run.offers):>5.0f})"
        )
    for label, first, second in (
        ("new customers", runs[0], runs[1]),
        ("1,000 customers", runs[4], runs[5]),
    ):
        slope = (second.rss_growth - first.rss_growth) / (second.offers - first.offers)
        report.append(
            f"  marginal cost per open offer, {label}: {slope:.0f} B (target under 500 B)"
        )
    return runs


class _Profiler:
    """py-spy recording one worker for the length of a run."""

    def __init__(self, output: str) -> None:
        self._output = output
        self._process: subprocess.Popen[bytes] | None = None

    def __call__(self, pid: int) -> None:
        self._process = subprocess.Popen(
            [
                _py_spy(),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--output",
                self._output,
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def finish(self) -> None:
        # py-spy writes its file when the recorded process exits (the run stops it).
        if self._process is not None:
            self._process.wait(timeout=60)


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else "py-spy"


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _machine() -> str:
    import platform

    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


if __name__ == "__main__":
    sys.exit(main())
