"""`upsell-stream demo`: the whole product on this machine in one command.

Starts the local broker (unless one already runs), the worker and the simulator, with a
rate drop injected a minute in and lifted 90 s later, so that an alert fires and then
resolves within about five minutes; prints where to look; on Ctrl-C (or SIGTERM)
stops everything it started and leaves no process behind.

The worker learns what it is watching from a description the demo writes under its data
directory (UPSELL_DEMO_INFO, stream_app.domain.demo_source): the page shows it.

On a data directory a previous demo left, it resumes (event time carries on from where
the previous demo stopped, the story plays again from there) unless `--fresh` is given,
that data is from another format of the demo, or it is too large to load back faster
than a clean start; then it starts clean. It says which, and how long it took to serve
rates.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from stream_app.domain.demo_source import DemoSource, InjectedDrop, RateChange
from stream_app.domain.events import InvalidEvent, parse_ts
from stream_app.domain.windows import rfc3339
from stream_app.runtime.kafka_clients import make_admin
from stream_app.runtime.topics import ensure_topics
from stream_app.settings import Settings
from stream_app.tools import local_kafka
from stream_app.tools.processes import stop_children
from stream_app.tools.simulator.scenario import (
    SEGMENTS,
    ScenarioConfig,
    expected_messages_per_offer,
    true_rate,
)

# Livelier than the production defaults, unless the user set their own. The simulated
# event time runs some 60 times faster than the clock, so it is soon ahead of it: no
# future_ts check.
DEMO_ENVIRONMENT = {
    "UPSELL_WINDOWS": "10m,30m,1d",
    "UPSELL_GRACE": "10s",
    "UPSELL_IDLE_ADVANCE": "30s",
    "UPSELL_MAX_FUTURE": "off",
}
DEMO_RATE = 200  # messages per second: about 64 offers, one per event-second
SECONDS_PER_OFFER = 1
# The story, in wall-clock seconds after the simulator starts: email converts at a third
# of its rate from 1:00 to 2:30. Each 30m window (about 28 s of wall clock, some 450
# email offers: enough for the detector; 10m windows have too few) is compared with the
# ones before: the alert fires once a window is mostly dropped (it did at 2:00) and
# resolves on the first window measured normal again (at 2:55); the viewer sees both
# within five minutes. 1d windows have no earlier windows to compare with.
DROP_CHANNEL = "email"
DROP_FACTOR = 0.33
DROP_AT_S = 60.0
DROP_FOR_S = 90.0
HOUR_MS = 3_600_000

# Every topic of the demo stays small: segments roll every minute or 8 MiB, topics that
# delete keep 48 MiB per partition, compacted ones (the changelogs, rates and KPIs) are
# cleaned as soon as a tenth is stale. Set as the local broker's cluster-wide defaults,
# so that they also hold for the changelogs the worker creates. Without them the board's
# changelog alone grew by about 400 MB a minute.
BROKER_BOUNDS = {
    "log.segment.bytes": str(8 * 1024 * 1024),
    "log.roll.ms": "60000",
    "log.retention.bytes": str(48 * 1024 * 1024),
    "log.cleaner.min.cleanable.ratio": "0.1",
    "log.cleaner.delete.retention.ms": "60000",
}

STATE_FORMAT = 1
# The worker loads its state back from the changelogs at roughly 5 to 10 MB a second on
# a busy two-core machine (a five-minute demo's 500 MB takes 50 to 120 s, a clean start
# 15 s): above this, starting clean is quicker than resuming.
RESUMABLE_BYTES = 128 * 1024 * 1024


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@dataclass(frozen=True)
class Start:
    """How this demo starts: `event_start_ms` None means clean; `says` tells the user."""

    event_start_ms: int | None
    says: str


def plan(started_at_ms: int, event_start_ms: int) -> tuple[DemoSource, str]:
    """The demo's description and the simulator's --drop for a run starting now."""
    offers_per_s = DEMO_RATE / expected_messages_per_offer(ScenarioConfig())
    speed = offers_per_s * SECONDS_PER_OFFER
    after = round(DROP_AT_S * offers_per_s)
    until = round((DROP_AT_S + DROP_FOR_S) * offers_per_s)
    gap_ms = SECONDS_PER_OFFER * 1000
    drop = InjectedDrop(
        channel=DROP_CHANNEL,
        factor=DROP_FACTOR,
        changes=tuple(
            RateChange(
                segment,
                round(true_rate(DROP_CHANNEL, segment), 4),
                round(true_rate(DROP_CHANNEL, segment) * DROP_FACTOR, 4),
            )
            for segment in SEGMENTS
        ),
        from_event_ms=event_start_ms + after * gap_ms,
        until_event_ms=event_start_ms + until * gap_ms,
        from_wall_s=DROP_AT_S,
        until_wall_s=DROP_AT_S + DROP_FOR_S,
    )
    source = DemoSource(
        started_at_ms=started_at_ms, event_start_ms=event_start_ms, speed=round(speed, 1), drop=drop
    )
    return source, f"{DROP_CHANNEL}:{after}:{DROP_FACTOR}:{until}"


def decide(data_dir: Path, fresh: bool) -> Start:
    """Resume the previous demo's data, or start clean; reads the files, changes nothing."""
    broker_data = local_kafka.BrokerPaths.under(data_dir).log_dir
    if not broker_data.exists():
        return Start(None, "starting clean (no previous demo data)")
    size = _size_bytes(data_dir)
    if fresh:
        return Start(None, f"starting clean: --fresh; the previous demo's {_mb(size)} removed")
    if size > RESUMABLE_BYTES:
        return Start(
            None,
            f"starting clean: the previous demo's data ({_mb(size)}) would "
            f"take longer to load back than a clean start (resumes up to "
            f"{_mb(RESUMABLE_BYTES)}); removed",
        )
    previous = _read_state(data_dir)
    if previous is None:
        return Start(
            None,
            "starting clean: the previous demo's data is from an older "
            f"format of the demo; its {_mb(size)} removed",
        )
    # On from the previous stream time: whatever this run sends is on time.
    return Start(
        _next_hour(previous),
        f"resuming the previous demo's data ({_mb(size)}): event time carries on from"
        f" {rfc3339(previous)} (pass --fresh to start clean)",
    )


def run(settings: Settings, fresh: bool = False) -> int:
    console = Console(stderr=True, soft_wrap=True)  # whole lines in a log too
    env = {**DEMO_ENVIRONMENT, **os.environ}
    settings = Settings.from_env(env)
    logs = settings.data_dir / "demo"
    info = logs / "source.json"
    env["UPSELL_DEMO_INFO"] = str(info.resolve())
    children: list[subprocess.Popen[bytes]] = []
    paths = local_kafka.BrokerPaths.under(settings.data_dir)
    broker_was_running = local_kafka.running_pid(paths) is not None
    began = time.monotonic()
    start = decide(settings.data_dir, fresh)
    console.print(start.says)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        if start.event_start_ms is None:
            if broker_was_running:
                local_kafka.run("stop", settings)
                broker_was_running = False
            _remove_demo_data(settings.data_dir)
        with console.status("starting the local Kafka broker (first time: downloads it)"):
            if local_kafka.run("start", settings) != 0:
                return 1
        bound_topics(settings)
        ensure_topics(settings)
        logs.mkdir(parents=True, exist_ok=True)
        info.unlink(missing_ok=True)
        children.append(_spawn(["worker"], env, logs / "worker.log"))
        url = settings.web_url
        with console.status(f"starting the worker (log: {logs / 'worker.log'})"):
            _wait_for(f"{url}/api/rates", children[0], timeout_s=600)
        console.print(
            f"serving rates {time.monotonic() - began:.0f} s after the start "
            f"({'resumed' if start.event_start_ms else 'clean start'})"
        )
        # The story's clock starts with the simulator; the worker reads the description
        # when it changes.
        started_at_ms = _now_ms()
        event_start_ms = start.event_start_ms or _next_hour(started_at_ms) - HOUR_MS
        source, drop = plan(started_at_ms, event_start_ms)
        info.write_text(json.dumps(source.as_json(), indent=1), encoding="utf-8")
        children.append(
            _spawn(
                [
                    "simulate",
                    "--rate",
                    str(DEMO_RATE),
                    "--duration",
                    "86400",
                    "--seconds-per-offer",
                    str(SECONDS_PER_OFFER),
                    "--start",
                    rfc3339(event_start_ms),
                    "--drop",
                    drop,
                    "--truth-file",
                    str(logs / "truth.json"),
                ],
                env,
                logs / "simulator.log",
            )
        )
        _print_story(console, source, url, logs)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = next(child for child in children if child.poll() is not None)
        console.print(f"a demo process stopped (exit {failed.returncode}); see {logs}")
        return 1
    except (KeyboardInterrupt, _Stop):
        return 0
    except RuntimeError as error:  # TopicsError too: one line each
        console.print(f"demo: {error}; see {logs}")
        return 1
    finally:
        with console.status("stopping"):
            _save_state(settings, logs)
            for child in reversed(children):  # one at a time: the last started first
                stop_children([child], timeout_s=30)
            if not broker_was_running:
                local_kafka.run("stop", settings)
        console.print(
            "demo stopped; nothing left running"
            + ("" if not broker_was_running else " but the broker that was already there")
        )


def bound_topics(settings: Settings) -> None:
    """The local broker's topic defaults, so the demo's data stays small.

    Set on each broker (the local one has one): the client takes no cluster-wide entity.
    """
    from kafka.admin import ConfigResource
    from kafka.errors import KafkaError

    admin = make_admin(settings)
    try:
        brokers = [broker["broker_id"] for broker in admin.describe_cluster()["brokers"]]
        admin.alter_configs(
            [ConfigResource("BROKER", str(node), configs=dict(BROKER_BOUNDS)) for node in brokers]
        )
    except (KafkaError, ValueError) as error:
        raise RuntimeError(f"could not bound the demo's topics: {error}") from None
    finally:
        admin.close()


def _print_story(console: Console, source: DemoSource, url: str, logs: Path) -> None:
    drop = source.drop
    console.print(f"[bold]live page[/]   {url}/")
    console.print(f"query API   {url}/api/rates?view=channel_segment&window=30m")
    console.print(f"metrics     {url}/metrics")
    console.print(f"terminal    upsell-stream rates --watch   (logs in {logs})")
    console.print(
        f"simulated data, event time about {source.speed:.0f} x the wall clock "
        f"from {rfc3339(source.event_start_ms)}"
    )
    if drop is not None:
        console.print(
            f"injected: {drop.channel} converts at {drop.factor:g} x its rate from "
            f"{_clock(drop.from_wall_s)} to {_clock(drop.until_wall_s)} after the "
            "start; watch the alert panel"
        )
    console.print("Ctrl-C stops the demo.")


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _next_hour(ms: int) -> int:
    return ms - ms % HOUR_MS + HOUR_MS


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


# Segments the log cleaner or retention replaced: Kafka deletes them a minute later
# (file.delete.delay.ms), or at its next start, and never reads them back. After a 45 s
# demo they were 17 MB of the board changelog's 34 MB.
_GONE_AT_START = (".deleted", ".cleaned")


def _size_bytes(root: Path) -> int:
    """The bytes a resume loads back, about: what the files take on disk, without those
    Kafka drops at its start."""
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and path.suffix not in _GONE_AT_START:
                total += path.stat().st_blocks * 512
        except OSError:
            continue
    return total


def _state_file(data_dir: Path) -> Path:
    return data_dir / "demo" / "state.json"


def _read_state(data_dir: Path) -> int | None:
    """The stream time the previous demo stopped at, if it left one in this format."""
    try:
        state: Any = json.loads(_state_file(data_dir).read_text(encoding="utf-8"))
        if state.get("format") != STATE_FORMAT:
            return None
        return parse_ts(state["stream_time"])
    except (OSError, ValueError, AttributeError, KeyError, InvalidEvent):
        return None


def _save_state(settings: Settings, logs: Path) -> None:
    """Where the stream stood, so that the next demo on this data carries on from there."""
    try:
        with urllib.request.urlopen(f"{settings.web_url}/api/rates", timeout=5) as answer:  # noqa: S310 - http, built from settings
            stream_time = json.loads(answer.read())["stream_time"]
    except (OSError, ValueError, KeyError):
        return  # not serving: the previous state (if any) still says where it stood
    if stream_time is not None:
        _state_file(settings.data_dir).write_text(
            json.dumps({"format": STATE_FORMAT, "stream_time": stream_time}), encoding="utf-8"
        )


def _remove_demo_data(data_dir: Path) -> None:
    """The broker's topics, the worker's state and the demo's files; the cached broker
    libraries and its settings files stay."""
    for path in (
        local_kafka.BrokerPaths.under(data_dir).log_dir,
        data_dir / "worker",
        data_dir / "demo",
    ):
        shutil.rmtree(path, ignore_errors=True)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stream_app.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for(url: str, child: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until `url` answers 200: the worker serves rates (not 503 while it loads state)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the worker exited with {child.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - http, built above
                return
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.5)
    raise RuntimeError(f"the worker did not serve {url} within {timeout_s:.0f} s")
