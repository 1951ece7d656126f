"""A restarted worker says it is recovering, with progress, until it serves its state.

One worker counts a simulated stream and stops (SIGTERM); a new one starts on the same
group and replays the changelogs. Polled throughout, /healthz always answers 200 with
status "ok" or "recovering" (a recovery document then: records replayed of the total per
changelog partition), and /api/rates either answers 503 with state "recovering" and the
same kind of progress, or serves the board; never "ask another worker" (this worker is the
only one, and holds the board). At the end the restored metrics equal the truth.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests

from tests.e2e.harness import deployment, wait_until
from tests.e2e.resilience import Simulator, counts
from tests.e2e.test_simulated_truth import assert_matches_truth

ENV = {"UPSELL_GRACE": "1h", "UPSELL_SESSION_TIMEOUT": "6s"}
OFFERS = 12_000


def _check_progress(progress: dict[str, Any]) -> None:
    assert progress["phase"] in ("joining", "rebalancing", "replaying"), progress
    if progress["phase"] != "replaying":
        return
    assert 0 <= progress["records_replayed"] <= progress["records_total"], progress
    assert progress["changelogs"], progress
    for changelog in progress["changelogs"]:
        assert changelog["topic"].endswith("-changelog"), changelog
        assert 0 <= changelog["records_replayed"] <= changelog["records_total"], changelog


def test_a_restarted_worker_tells_its_recovery_until_it_serves(data_dir: Path) -> None:
    with deployment(data_dir, extra_env=ENV) as service:
        created = service.cli("topics", "create")
        assert created.returncode == 0, created.stderr
        service.start_worker()
        truth = (
            Simulator(service, ("--count", str(OFFERS), "--seed", "5", "--rate", "0"))
            .start()
            .join()
        )
        service.wait_caught_up(timeout=300)
        before = counts(service.metrics())
        service.stop_worker()
        port = service.start_worker()
        seen: dict[str, int] = {"recovering": 0, "served": 0}

        def served() -> bool:
            health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            assert health.status_code == 200, health.text
            document = health.json()
            assert document["status"] in ("ok", "recovering"), document
            if document["status"] == "recovering":
                _check_progress(document["recovery"])
            rates = requests.get(f"http://127.0.0.1:{port}/api/rates", timeout=10)
            if rates.status_code == 503:
                body = rates.json()
                assert body["state"] == "recovering", body
                assert rates.headers.get("Retry-After"), rates.headers
                _check_progress(body["progress"])
                seen["recovering"] += 1
                return False
            assert rates.status_code == 200, rates.text
            seen["served"] += 1
            return document["status"] == "ok" and counts(service.metrics()) == before

        started = time.monotonic()
        wait_until(served, 300, "the restarted worker serving its restored state", every=0.05)
        print(
            f"\nserving {time.monotonic() - started:.1f} s after the restart; "
            f"{seen['recovering']} recovering answers seen"
        )
        assert_matches_truth(service, truth)
