"""A real Prometheus server (Debian's `prometheus` binary) for end-to-end tests: started on
a free loopback port with a temporary config and storage, stopped at the end.

The deployed rules (deploy/prometheus/rules/) are loaded with their durations compressed
by a fixed map (1 week of baseline becomes seconds), so that a test sees them alert
within a minute or two; thresholds and expressions stay exactly as deployed. Recorded
series keep their production names (`..._rate1h` then spans the compressed range).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.harness import free_port, wait_until

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
# Range selectors, offsets and `for:` durations only.
_DURATION = re.compile(r"(\[|offset |for: )(\d+[smhdw])\b")


def compress(rules: str, durations: Mapping[str, str]) -> str:
    """The rule file with every duration mapped; a duration missing from the map fails."""

    def replace(match: re.Match[str]) -> str:
        duration = match.group(2)
        if duration not in durations:
            raise AssertionError(f"no compressed duration for {duration!r} in the rules")
        return match.group(1) + durations[duration]

    return _DURATION.sub(replace, rules)


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = reply.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        reply = requests.get(
            f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10
        )
        values: list[str] = reply.json()["data"]
        return values

    def alerts(self) -> list[dict[str, Any]]:
        reply = requests.get(f"{self.url}/api/v1/alerts", timeout=10)
        alerts: list[dict[str, Any]] = reply.json()["data"]["alerts"]
        return alerts

    def targets_up(self) -> bool:
        reply = requests.get(f"{self.url}/api/v1/targets", timeout=10)
        active = reply.json()["data"]["activeTargets"]
        return bool(active) and all(target["health"] == "up" for target in active)


@contextmanager
def prometheus(
    workdir: Path, targets: list[str], durations: Mapping[str, str], interval: str = "1s"
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: run scripts/setup (it installs Debian's package)")
    rules = workdir / "rules"
    rules.mkdir(parents=True)
    for path in sorted(RULES.glob("*.yml")):
        (rules / path.name).write_text(compress(path.read_text(), durations))
    config = workdir / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
        "rule_files:\n  - rules/*.yml\n"
        "scrape_configs:\n  - job_name: upsell-stream\n    static_configs:\n"
        f"      - targets: [{', '.join(targets)}]\n"
    )
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}")

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited: {(workdir / 'prometheus.log').read_text()}")
        try:
            return requests.get(f"{server.url}/-/ready", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_until(ready, 60, "prometheus to be ready")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
