"""UPSELL_IDLE_ADVANCE: a stream that stops sending still closes and publishes its windows."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.harness import deployment, latest_by_key, read_topic, wait_until
from tests.e2e.test_scripted_rates import O1, O2, O3, phase

SETTINGS = {"UPSELL_WINDOWS": "10s", "UPSELL_GRACE": "1s", "UPSELL_ATTRIBUTION_WINDOW": "5s"}


def test_idle_stream_closes_and_publishes_its_windows(data_dir: Path) -> None:
    with deployment(data_dir, extra_env={**SETTINGS, "UPSELL_IDLE_ADVANCE": "2s"}) as service:
        offers = service.topics["offers"]
        assert service.cli("topics", "create").returncode == 0
        service.start_worker()
        started = time.monotonic()
        # One key, one source partition: read in ts order, so none of them is late.
        phase(
            service,
            [
                (topic, b"one-key", value)
                for topic, _, value in (o.message(offers) for o in (O1, O2, O3))
            ],
        )

        def final_records() -> dict[str, dict[str, object]]:
            # o3 alone finalizes o1's window: wait for all three windows, each final.
            latest = latest_by_key(read_topic(service.topics["rates"], timeout=2))
            starts = {r["window_start"] for r in latest.values()}
            done = len(starts) >= 3 and all(r["final"] for r in latest.values())
            return latest if done else {}

        latest = wait_until(final_records, 90, "final records of the idle stream's windows")
        # o1 at 10:00:30, o2 at 10:01:00, o3 at 10:01:10: three 10 s windows, one offer each.
        assert {r["window_start"] for r in latest.values()} == {
            "2026-11-22T10:00:30.000Z",
            "2026-11-22T10:01:00.000Z",
            "2026-11-22T10:01:10.000Z",
        }
        assert all(
            r["offers"] == 1
            for r in latest.values()
            if r["channel"] != "__all__" or r["segment"] != "__all__"
        )
        # It cannot have closed before the idle period plus the window and its grace.
        assert time.monotonic() - started > 2


def test_without_idle_advance_a_quiet_stream_stays_open(data_dir: Path) -> None:
    with deployment(data_dir, extra_env=SETTINGS) as service:
        offers = service.topics["offers"]
        assert service.cli("topics", "create").returncode == 0
        service.start_worker()
        for offer in (O1, O2, O3):  # in ts order: a later one first would make o1 late
            phase(service, [offer.message(offers)])
        time.sleep(20)  # longer than the idle test needs for its first records
        service.wait_caught_up()
        closed = {
            r["window_start"]
            for r in latest_by_key(read_topic(service.topics["rates"], timeout=2)).values()
        }
        # Only o1's window closed: o3 (10:01:10) moved stream time past its end + grace
        # (10:00:41), not yet past o2's (10:01:11); the rest waits for events that never come.
        assert closed == {"2026-11-22T10:00:30.000Z"}
