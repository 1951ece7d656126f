"""A healthy worker at the demo's rate logs no ERROR: the stall check that Faust's liveness
timer runs (BatchConsumer.verify_event_path, core/stalls.py) reads the hot path's progress,
not Faust's own per-message streams'."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer

from stream_app.tools.demo import DEMO_ENVIRONMENT, DEMO_RATE
from tests.e2e.harness import BROKER, Deployment, deployment, wait_until

# Faust reads both from the environment itself (faust/types/settings/settings.py).
STALL_TIMEOUT_S = 5
LOOK_INTERVAL_S = 1.0  # Faust looks every 2.5 x broker_commit_interval
LIVENESS = {
    "STREAM_PROCESSING_TIMEOUT": str(STALL_TIMEOUT_S),
    "BROKER_COMMIT_INTERVAL": str(LOOK_INTERVAL_S / 2.5),
}
RUN_S = 30


def test_a_healthy_worker_at_the_demo_rate_logs_no_error(data_dir: Path) -> None:
    """Many stall timeouts and looks in half a minute.

    The timer looks at every assigned partition every 2.5 x broker_commit_interval, and a
    partition with records waiting and none handled for stream_processing_timeout is
    logged as stalled, an ERROR. Both are Faust's settings, read from the environment by
    Faust (over the worker's own); scaled to a 5 s timeout and a look every second, this
    30 s run at the demo's rate passes the timeout 6 times and is looked at 30 times.
    When the check read Faust's per-message streams (which the hot path bypasses), this
    test failed within seconds of the worker's start."""
    env = {**DEMO_ENVIRONMENT, **LIVENESS, "UPSELL_LOG_LEVEL": "info"}
    with deployment(data_dir, extra_env=env) as service:
        assert service.cli("topics", "create").returncode == 0
        _join_a_group(service)
        service.start_worker()
        truth_file = service.data_dir / f"{service.name}-truth.json"
        simulated = service.cli(
            "simulate",
            "--rate",
            str(DEMO_RATE),
            "--duration",
            str(RUN_S),
            "--seed",
            "7",
            "--truth-file",
            str(truth_file),
            timeout=RUN_S * 5,
        )
        assert simulated.returncode == 0, simulated.stderr
        truth: dict[str, Any] = json.loads(truth_file.read_text())
        service.wait_caught_up(timeout=300)
        # Healthy indeed: every offer sent was counted.
        offers = service.metrics()[
            (
                "upsell_offers_presented_total",
                frozenset({("channel", "__all__"), ("segment", "__all__")}),
            )
        ]
        assert offers == sum(truth["offers_presented"].values())
        log_file = service.data_dir / f"{service.name}-worker-0.log"
        service.stop_all()
        log = log_file.read_text()
        assert "[INFO]" in log  # the worker's own log, at a level that shows errors
        errors = [line for line in log.splitlines() if "ERROR" in line]
        assert errors == []


def _join_a_group(service: Deployment) -> None:
    """Until a consumer group has joined on the broker. A broker that has never served a
    group creates its offsets topic at the first request; meanwhile aiokafka logs ERRORs
    ("GroupCoordinatorNotAvailableError") that have nothing to do with liveness."""
    consumer = KafkaConsumer(
        service.topics["offers"],
        bootstrap_servers=BROKER,
        group_id=f"{service.name}-warm-up",
        enable_auto_commit=False,
    )
    try:
        wait_until(
            lambda: consumer.poll(timeout_ms=500) is not None and consumer.assignment(),
            120,
            "a consumer group to join",
        )
    finally:
        consumer.close()
