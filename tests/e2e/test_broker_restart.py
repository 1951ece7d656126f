"""The broker stops and starts again (same data directory) while the worker runs and the
simulator produces: the same worker process reconnects by itself and ends exact. A worker
told to stop while the broker is down ends within its stop deadline, and a new one ends
exact once the broker is back."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from stream_app.runtime.worker import STOP_TIMEOUT_S
from tests.e2e.harness import deployment, wait_until
from tests.e2e.resilience import (
    Simulator,
    offers_counted,
    own_broker,
    wait_matches_truth,
)

ENV = {"UPSELL_GRACE": "1h", "UPSELL_SESSION_TIMEOUT": "6s"}


def test_worker_rides_out_a_broker_restart(tmp_path: Path) -> None:
    began = time.monotonic()
    with (
        own_broker(tmp_path / "broker") as broker,
        deployment(tmp_path, extra_env={**ENV, **broker.env}) as service,
    ):
        created = service.cli("topics", "create")
        assert created.returncode == 0, created.stderr
        service.start_worker()
        worker = service.workers[0]
        simulator = Simulator(
            service, ("--count", "5000", "--seed", "23", "--rate", "1500")
        ).start()
        wait_until(lambda: offers_counted(service.metrics()) > 500, 120, "counting to start")

        stopped = broker.command("stop")
        assert stopped.returncode == 0, stopped.stderr
        down_at = time.monotonic()
        time.sleep(3)
        broker.start()
        outage = time.monotonic() - down_at

        truth = simulator.join()
        wait_matches_truth(service, truth, timeout=240)
        assert worker.poll() is None, "the worker died instead of reconnecting"
        assert service.workers == [worker]
        print(
            f"\nbroker down {outage:.1f} s; {sum(truth['messages_sent'].values()):,} "
            f"messages exact after {time.monotonic() - began:.0f} s"
        )


def test_a_worker_told_to_stop_while_the_broker_is_down_ends_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    with (
        own_broker(tmp_path / "broker") as broker,
        deployment(tmp_path, extra_env={**ENV, **broker.env}) as service,
    ):
        created = service.cli("topics", "create")
        assert created.returncode == 0, created.stderr
        service.start_worker()
        truth = Simulator(service, ("--count", "3000", "--seed", "29")).start().join()
        wait_until(lambda: offers_counted(service.metrics()) > 0, 120, "counting to start")

        stopped = broker.command("stop")
        assert stopped.returncode == 0, stopped.stderr
        # Past the session timeout: the worker has found the coordinator gone.
        time.sleep(8)
        asked = time.monotonic()
        code = service.stop_worker(sig=signal.SIGTERM)
        took = time.monotonic() - asked
        assert code in (0, 1), code
        assert took < STOP_TIMEOUT_S + 10, took
        log = next(tmp_path.glob(f"{service.name}-worker-*.log")).read_text(errors="replace")
        if code == 1:
            assert f"still stopping {STOP_TIMEOUT_S:.0f} s after the signal" in log

        broker.start()
        service.start_worker()
        wait_matches_truth(service, truth, timeout=240)
        print(f"\nthe worker stopped in {took:.1f} s (exit code {code}) with the broker down")
