"""A rate drop end to end: the simulator cuts one channel's true rate to a tenth; the
real worker and a real Prometheus (the deployed rules, durations compressed) both alert
on that channel, and on no other; every dashboard query returns data meanwhile.

Time is compressed twice. Event time: 0.1 s per offer at about 250 offers a second runs
event time 25x faster than the wall clock, so 2-minute windows measured 2 minutes after
their end (the in-stream detector) pass in seconds. Wall time: Prometheus scrapes and
evaluates every second, its "hour" is 20 s and its "week-ago baseline" 40 s earlier.
The worker must keep up with the simulator's 800 messages a second (it has about twice
that on a busy two-core machine): Prometheus sees the stream as the worker processes it.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.harness import (
    CLI,
    Deployment,
    as_json,
    deployment,
    produce,
    read_topic,
    wait_until,
)
from tests.e2e.prometheus import Prometheus, prometheus

DROPPED = "in_app"
ALL = "__all__"
RATE = 800  # messages a second, about 3.2 per offer
OFFERS = 30_000  # about 120 s at RATE
DROP_AFTER = 18_000  # offers, about 70 s in: Prometheus has a "week-ago hour" by then
FACTOR = 0.1

WORKER_ENV = {
    "UPSELL_WINDOWS": "2m",
    "UPSELL_GRACE": "5s",
    "UPSELL_ATTRIBUTION_WINDOW": "10m",
    "UPSELL_DROP_AGE": "2m",
    "UPSELL_DROP_MIN_OFFERS": "100",
    "UPSELL_DROP_BASELINE_WINDOWS": "4",
    "UPSELL_DROP_SIGNIFICANCE": "0.00001",
    "UPSELL_DROP_MIN_RELATIVE": "0.3",
}
# Every duration in deploy/prometheus/rules, compressed.
DURATIONS = {"1w": "40s", "1h": "20s", "15m": "3s", "10m": "10s", "5m": "5s", "2m": "3s"}
# What Grafana would put in for the dashboard's variables (defaults; window as configured).
VARIABLES = {
    "$__rate_interval": "15s",
    "$__range": "1m",
    "$__interval": "1s",
    "$window": "2m",
    "$channel": ".*",
    "$segment": ALL,
}
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/upsell.json"


@contextmanager
def simulator(service: Deployment) -> Iterator[subprocess.Popen[bytes]]:
    log = open(service.data_dir / f"{service.name}-simulator.log", "wb")
    process = subprocess.Popen(
        [
            *CLI,
            "simulate",
            "--rate",
            str(RATE),
            "--count",
            str(OFFERS),
            "--seed",
            "5",
            "--seconds-per-offer",
            "0.1",
            "--drop",
            f"{DROPPED}:{DROP_AFTER}:{FACTOR}",
        ],
        env=service.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()


def late_offer(service: Deployment) -> None:
    """One offer an hour older than the stream: late for every window size, so that the
    late-events counter (a dashboard panel) has a series."""
    ts = int(time.time() * 1000) - 3_600_000
    customer = f"late-{uuid.uuid4().hex[:8]}"
    produce(
        [
            (
                service.topics["offers"],
                customer.encode(),
                as_json(
                    {
                        "event_id": f"ev-{customer}",
                        "offer_id": f"of-{customer}",
                        "customer_id": customer,
                        "channel": "email",
                        "segment": "smb",
                        "ts": ts,
                    }
                ),
            )
        ]
    )


def firing_with_channel(server: Prometheus) -> set[tuple[str, str]]:
    return {
        (a["labels"]["alertname"], a["labels"]["channel"])
        for a in server.alerts()
        if a["state"] == "firing" and "channel" in a["labels"]
    }


def dashboard_queries() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(panel title, PromQL) of every panel target and (label, match) of every variable."""
    dashboard = json.loads(DASHBOARD.read_text())

    def substitute(text: str) -> str:
        for name in sorted(VARIABLES, key=len, reverse=True):
            text = text.replace(name, VARIABLES[name])
        return text

    panels = [
        (p["title"], substitute(t["expr"]))
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    ]
    variables = []
    for variable in dashboard["templating"]["list"]:
        inner = variable["definition"].removeprefix("label_values(").removesuffix(")")
        match, label = (part.strip() for part in inner.rsplit(",", 1))
        variables.append((label, substitute(match)))
    return panels, variables


_KEY = f'{{channel="{DROPPED}",segment="{ALL}"}}'
TRACE = {
    "rate": "channel_segment:upsell_conversions_per_offers_presented:ratio_rate1h" + _KEY,
    "baseline": "channel_segment:upsell_conversions_per_offers_presented:ratio_rate1h_offset1w"
    + _KEY,
    "z": "channel_segment:upsell_conversion_drop:zscore1h" + _KEY,
    "offers": 'sum(upsell_offers_presented_total{channel="__all__",segment="__all__"})',
    "read/s": "sum(rate(upsell_events_processed_total[5s]))",
}


def trace_row(server: Prometheus, since: float) -> str:
    """One line of the figures the drop alert depends on, for a failure's message."""
    values = []
    for name, expr in TRACE.items():
        result = server.query(expr)
        values.append(f"{name}={float(result[0]['value'][1]):.4g}" if result else f"{name}=-")
    return f"{time.monotonic() - since:4.0f}s " + " ".join(values)


def in_stream_alerts(service: Deployment) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in read_topic(service.topics["alerts"], timeout=2)]


def test_a_channel_drop_alerts_in_prometheus_and_in_stream_and_nowhere_else(data_dir: Path) -> None:
    started = time.monotonic()
    with deployment(data_dir, partitions=2, extra_env=WORKER_ENV) as service:
        assert service.cli("topics", "create").returncode == 0
        port = service.start_worker()
        with (
            prometheus(data_dir / "prometheus", [f"127.0.0.1:{port}"], DURATIONS) as server,
            simulator(service) as sim,
        ):
            wait_until(server.targets_up, 30, "prometheus to scrape the worker")
            wait_until(
                lambda: server.query("upsell_offers_presented_total"),
                60,
                "the first offers in prometheus",
            )
            late_offer(service)
            seen: set[tuple[str, str]] = set()
            trace: list[str] = []

            def prometheus_alert() -> bool:
                assert sim.poll() in (None, 0), "the simulator failed"
                seen.update(firing_with_channel(server))
                trace.append(trace_row(server, started))
                return ("UpsellRateDrop", DROPPED) in seen

            # About 90 s in; a slow machine processes the stream more slowly.
            try:
                wait_until(prometheus_alert, 420, f"UpsellRateDrop for {DROPPED}", every=1)
            except AssertionError as error:
                raise AssertionError("\n".join([str(error), *trace[-60::3]])) from None
            fired_after = time.monotonic() - started

            panels, variables = dashboard_queries()
            for label, match in variables:
                assert server.label_values(label, match), (label, match)
            # Each query must return data at some moment of the run (a busy worker
            # processes in bursts, and a short rate range may fall between two).
            pending = dict(panels)

            def all_answered() -> bool:
                for title, expr in list(pending.items()):
                    if server.query(expr):
                        del pending[title]
                return not pending

            try:
                wait_until(all_answered, 60, "every dashboard query to return data", every=1)
            except AssertionError:
                raise AssertionError(f"dashboard queries without data: {pending}") from None

            def in_stream_fired() -> list[dict[str, Any]]:
                seen.update(firing_with_channel(server))
                return [
                    r
                    for r in in_stream_alerts(service)
                    if r["state"] == "fired" and r["channel"] == DROPPED
                ]

            fired = wait_until(in_stream_fired, 120, f"an in-stream alert for {DROPPED}", every=1)
            # Keep watching a few seconds more for alerts on other channels.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                seen.update(firing_with_channel(server))
                time.sleep(1)
        records = in_stream_alerts(service)

    assert {channel for _, channel in seen} <= {DROPPED, ALL}, seen
    assert {r["channel"] for r in records} <= {DROPPED, ALL}, records
    first = fired[0]
    assert first["observed_rate"] < first["baseline_rate"] * 0.7
    assert first["p_value"] < 0.00001 and first["z"] < 0
    assert first["observed_offers"] >= 100 and first["baseline_offers"] >= 100
    print(f"UpsellRateDrop firing {fired_after:.0f} s after start; in-stream: {first['reason']}")
