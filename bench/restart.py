"""Restart time and changelog size: `python bench/restart.py [--events N]`.

On the local broker, one worker drains N preloaded simulator events until its counters
equal the simulator's truth; then the changelogs' bytes on disk are set beside the input
topics' bytes, the worker is stopped (SIGTERM) and a new one started on the same group. The
clock runs from the new worker's start to the moment its /metrics show the restored totals
(equal to the truth again) and /healthz says ok; on the way it prints what /healthz reports
while the changelogs are replayed. Then a second worker joins the group: the clock runs
from its start until it serves the partitions handed to it (its own counters hold offers,
both workers say ok, and their summed counters equal the truth: the first worker has let
go of what the second took). `measure_restart` is what bench/run.py can call.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    BenchError,
    Broker,
    Deployment,
    LagReader,
    Progress,
    parse_samples,
    truth_mismatches,
)
from bench.throughput import WORKER_ENV, Dataset, preload
from stream_app.runtime.topics import BOARD_TABLE, PARTITION_TABLE
from stream_app.tools.local_kafka import BrokerPaths
from stream_app.tools.processes import stop_children

CHANGELOG_TABLES = (PARTITION_TABLE, BOARD_TABLE)


@dataclass(frozen=True)
class RestartRun:
    events: int
    drain_seconds: float
    input_bytes: int
    changelog_bytes: int
    changelog_records: int
    # From the new worker's start: /healthz answering, then serving the restored state.
    first_answer_seconds: float
    # When /healthz first and last said it was replaying the changelogs (None: never seen).
    replay_began_seconds: float | None
    replay_ended_seconds: float | None
    serving_seconds: float
    # What /healthz reported while the worker recovered (the last such document).
    last_recovery: dict[str, Any] | None
    # From a second worker's start until it serves the partitions handed to it.
    handover_seconds: float

    @property
    def changelog_per_input_byte(self) -> float:
        return self.changelog_bytes / max(1, self.input_bytes)


def topic_bytes(broker: Broker, topics: list[str]) -> int:
    """Bytes on disk of the topics' partitions, read from the local broker's log dirs."""
    log_dir = BrokerPaths.under(broker.data_dir).log_dir
    total = 0
    for topic in topics:
        for partition_dir in log_dir.glob(f"{topic}-*"):
            if partition_dir.name.rsplit("-", 1)[0] != topic:
                continue
            total += sum(f.stat().st_size for f in partition_dir.glob("*.log"))
    return total


def measure_restart(
    broker: Broker, dataset: Dataset, progress: Progress, timeout: float
) -> RestartRun:
    deployment = Deployment(
        broker, dataset.offers_topic, dataset.purchases_topic, extra_env=dict(WORKER_ENV)
    )
    changelogs = [f"{deployment.name}-{table}-changelog" for table in CHANGELOG_TABLES]
    lag = LagReader(deployment)
    try:
        deployment.start_worker()
        started = time.monotonic()
        _wait_exact(deployment, lag, dataset, progress, started + timeout, "draining")
        drain_seconds = time.monotonic() - started
        ends = broker.end_offsets(changelogs)
        changelog_records = sum(ends.values())
        input_bytes = topic_bytes(broker, dataset.topics)
        changelog_bytes = topic_bytes(broker, changelogs)
        progress.done(
            f"drained {dataset.messages:,} events in {drain_seconds:.1f} s; "
            f"changelogs {changelog_bytes / 1e6:,.1f} MB on disk "
            f"({changelog_records:,} records) for {input_bytes / 1e6:,.1f} MB of "
            "input"
        )
        _stop_worker(deployment)
        restarted = time.monotonic()
        deployment.start_worker()
        first_answer: float | None = None
        last_recovery: dict[str, Any] | None = None
        replay_began: float | None = None
        replay_ended: float | None = None
        deadline = restarted + timeout
        while True:
            if time.monotonic() > deadline:
                raise BenchError(f"the restarted worker did not serve its state in {timeout:.0f} s")
            health = deployment.health(0)
            if health is not None:
                if first_answer is None:
                    first_answer = time.monotonic() - restarted
                recovery = health.get("recovery")
                if recovery is not None and recovery.get("phase") == "replaying":
                    replay_ended = time.monotonic() - restarted
                    if replay_began is None:
                        replay_began = replay_ended
                if recovery is not None:
                    last_recovery = recovery
                    progress(f"restart: {_recovery_line(recovery)}")
                elif health.get("status") == "ok" and not truth_mismatches(
                    deployment, dataset.truth
                ):
                    serving = time.monotonic() - restarted
                    break
            time.sleep(0.1)
        progress.done(f"restarted: serving the restored state {serving:.1f} s after start")
        handover = _measure_handover(deployment, dataset, progress, timeout)
        return RestartRun(
            dataset.messages,
            round(drain_seconds, 1),
            input_bytes,
            changelog_bytes,
            changelog_records,
            round(first_answer or serving, 1),
            _rounded(replay_began),
            _rounded(replay_ended),
            round(serving, 1),
            last_recovery,
            round(handover, 1),
        )
    finally:
        lag.close()
        deployment.stop()


def _measure_handover(
    deployment: Deployment, dataset: Dataset, progress: Progress, timeout: float
) -> float:
    joined = time.monotonic()
    deployment.start_worker()
    joining = len(deployment.workers) - 1
    deadline = joined + timeout
    while True:
        if time.monotonic() > deadline:
            raise BenchError(f"the joining worker did not serve its partitions in {timeout:.0f} s")
        healthy = all(
            (deployment.health(i) or {}).get("status") == "ok"
            for i in range(len(deployment.workers))
        )
        if (
            healthy
            and _offers_counted(deployment, joining) > 0
            and not truth_mismatches(deployment, dataset.truth)
        ):
            seconds = time.monotonic() - joined
            progress.done(f"handover: the joining worker served {seconds:.1f} s after its start")
            return seconds
        progress("handover: waiting for the joining worker to serve its partitions")
        time.sleep(0.1)


def _offers_counted(deployment: Deployment, index: int) -> float:
    samples = parse_samples(deployment.metrics_text(index), {"upsell_offers_presented_total"})
    return sum(samples.values())


def _wait_exact(
    deployment: Deployment,
    lag: LagReader,
    dataset: Dataset,
    progress: Progress,
    deadline: float,
    what: str,
) -> None:
    while True:
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: the worker did not reach the truth in time")
        current = lag.lag()
        if current == 0 and not truth_mismatches(deployment, dataset.truth):
            return
        progress(
            f"{what}: {deployment.events_in():,}/{dataset.messages:,} events validated, "
            f"lag {current:,}"
        )
        time.sleep(0.2)


def _stop_worker(deployment: Deployment) -> None:
    process = deployment.workers.pop(0)
    deployment.ports.pop(0)
    stop_children([process], timeout_s=60)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _recovery_line(recovery: dict[str, Any]) -> str:
    if recovery.get("phase") != "replaying":
        return str(recovery.get("phase"))
    left = recovery.get("estimated_seconds_left")
    return (
        f"replaying {recovery['records_replayed']:,}/{recovery['records_total']:,} "
        f"changelog records, {recovery.get('records_per_second') or 0:,}/s, "
        f"about {left if left is not None else '?'} s left"
    )


def report_lines(run: RestartRun) -> list[str]:
    return [
        f"changelog bytes per input byte       {run.changelog_per_input_byte:>10.2f}   "
        f"({run.changelog_bytes / 1e6:,.1f} MB of changelogs on disk, "
        f"{run.changelog_records:,} records, for {run.input_bytes / 1e6:,.1f} MB of input)",
        f"restart after {run.events:,} events     {run.serving_seconds:>10.1f} s     "
        f"to serving the restored state (/healthz answering after "
        f"{run.first_answer_seconds:.1f} s, replaying seen from {run.replay_began_seconds} "
        f"to {run.replay_ended_seconds} s)",
        f"a second worker joining               {run.handover_seconds:>10.1f} s     "
        "to serving the partitions handed to it",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/restart.py", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--bootstrap",
        default="127.0.0.1:19692",
        help="the local broker's address (its own port: default 19692)",
    )
    parser.add_argument("--data-dir", default=str(ROOT / "var" / "bench"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stop-broker", action="store_true")
    args = parser.parse_args(argv)
    progress = Progress()
    broker = Broker(args.bootstrap, Path(args.data_dir).resolve())
    try:
        progress("starting the local broker", force=True)
        broker.start()
        dataset = preload(broker, args.events, args.seed, progress)
        run = measure_restart(
            broker, dataset, progress, timeout=max(300.0, dataset.messages / 1_000)
        )
    except BenchError as error:
        progress.done(f"bench/restart.py: {error}")
        return 1
    finally:
        if broker.started_here or args.stop_broker:
            broker.stop()
    print("\n".join(report_lines(run)))
    print({key: value for key, value in asdict(run).items() if key != "last_recovery"})
    if run.last_recovery is not None:
        print(f"last recovery document: {run.last_recovery}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
