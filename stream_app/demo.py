"""`upsell-stream demo`: the whole product on this machine in one command.

Starts the local broker (unless one already runs), the worker and the simulator, with a
rate drop injected after a while so that an alert shows; prints where to look; on Ctrl-C
(or SIGTERM) stops everything it started and leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from rich.console import Console

from stream_app import local_kafka
from stream_app.settings import Settings
from stream_app.topics import ensure_topics

# Livelier than the production defaults, unless the user set their own.
DEMO_ENVIRONMENT = {"UPSELL_WINDOWS": "1m,5m,1h", "UPSELL_GRACE": "10s",
                    "UPSELL_IDLE_ADVANCE": "30s"}
DEMO_RATE = 200  # offers and purchases per second, about one offer per event-second
DROP_AFTER_OFFERS = 15_000  # about four minutes in, email converts at a third of its rate


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def run(settings: Settings) -> int:
    console = Console(stderr=True)
    env = {**DEMO_ENVIRONMENT, **os.environ}
    settings = Settings.from_env(env)
    children: list[subprocess.Popen[bytes]] = []
    broker_was_running = local_kafka.running_pid(
        local_kafka.BrokerPaths.under(settings.data_dir)) is not None
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with console.status("starting the local Kafka broker (first time: downloads it)"):
            if local_kafka.run("start", settings) != 0:
                return 1
        ensure_topics(settings)
        logs = settings.data_dir / "demo"
        logs.mkdir(parents=True, exist_ok=True)
        children.append(_spawn(["worker"], env, logs / "worker.log"))
        url = settings.web_url
        with console.status(f"starting the worker (log: {logs / 'worker.log'})"):
            _wait_for(f"{url}/healthz", children[0], timeout_s=120)
        children.append(_spawn(
            ["simulate", "--rate", str(DEMO_RATE), "--duration", "86400",
             "--seconds-per-offer", "1", "--drop", f"email:{DROP_AFTER_OFFERS}:0.33",
             "--truth-file", str(logs / "truth.json")],
            env, logs / "simulator.log"))
        console.print(f"[bold]live page[/]   {url}/")
        console.print(f"query API   {url}/api/rates?view=channel_segment&window=1m")
        console.print(f"metrics     {url}/metrics")
        console.print(f"terminal    upsell-stream rates --watch   (logs in {logs})")
        console.print("Ctrl-C stops the demo.")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = next(child for child in children if child.poll() is not None)
        console.print(f"a demo process stopped (exit {failed.returncode}); see {logs}")
        return 1
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        with console.status("stopping"):
            for child in reversed(children):
                _stop(child)
            if not broker_was_running:
                local_kafka.run("stop", settings)
        console.print("demo stopped; nothing left running" + (
            "" if not broker_was_running else " but the broker that was already there"))


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "stream_app.cli", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)


def _wait_for(url: str, child: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the worker exited with {child.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - http, built above
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the worker did not answer at {url} within {timeout_s:.0f} s")

