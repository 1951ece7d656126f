"""kill -9 of the worker at random points of a 100,000-message run ends exact.

The worker is killed (SIGKILL: no shutdown, no flush, no commit) at random moments while
the simulator produces and while the worker catches up, and restarted each time. At the
end the metrics equal the simulator's ground truth, and every count and the latest
record per key of the rates and KPI topics equal those of an uninterrupted run of the
same stream in a second deployment with the same settings (emitted_at aside).
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from tests.e2e.harness import deployment
from tests.e2e.resilience import Simulator, counts, messages_sent, offers_counted, outputs
from tests.e2e.test_simulated_truth import assert_matches_truth

# Grace beyond the event-time skew of one fetch (about 15 min of event time per second
# here). The successor takes a killed worker's place in the group at once (static
# membership): a dead member beside it, holding part of the partitions until its session
# ended, let the successor run hours of event time ahead on the rest, whose backlog then
# counted late. The short session bounds that if the take-over ever failed.
ENV = {"UPSELL_GRACE": "1h", "UPSELL_SESSION_TIMEOUT": "6s"}
OFFERS = 29_500  # with purchases, duplicates, malformed and settling ones: > 100,000
SEED = 17
RATE = 3_000
MIN_KILLS, MAX_KILLS = 3, 6


def test_kill_9_at_random_points_ends_exact(data_dir: Path) -> None:
    rng = random.Random(20261123)
    began = time.monotonic()
    with (
        deployment(data_dir, extra_env=ENV) as crashed,
        deployment(data_dir, extra_env=ENV) as calm,
    ):
        for service in (crashed, calm):
            created = service.cli("topics", "create")
            assert created.returncode == 0, created.stderr
        stream = ("--count", str(OFFERS), "--seed", str(SEED))
        # The same stream, once, without a crash, meanwhile: a backlog read at full speed.
        calm.start_worker()
        calm_simulator = Simulator(calm, (*stream, "--rate", "0")).start()
        crashed.start_worker()
        simulator = Simulator(crashed, (*stream, "--rate", str(RATE))).start()
        kills: list[tuple[float, float]] = []
        counted_before = 0.0
        while len(kills) < MAX_KILLS and (simulator.running or len(kills) < MIN_KILLS):
            if len(kills) % 2:
                # In start-up and recovery: at a random moment after the restart.
                time.sleep(rng.uniform(1.0, 8.0))
                seen = offers_counted(crashed.metrics())
            else:
                # While processing: once a random number of offers more than before the
                # last kill are counted (recovered counts included).
                target = min(counted_before + rng.uniform(300, 4000), 0.95 * OFFERS)
                deadline = time.monotonic() + 90
                seen = offers_counted(crashed.metrics())
                while seen < target and time.monotonic() < deadline:
                    time.sleep(0.3)
                    seen = offers_counted(crashed.metrics())
            assert crashed.stop_worker(sig=signal.SIGKILL) == -signal.SIGKILL
            kills.append((round(time.monotonic() - began, 1), seen))
            counted_before = max(counted_before, seen)
            crashed.start_worker()
        truth = simulator.join()
        assert messages_sent(truth) >= 100_000
        crashed.wait_caught_up(timeout=300)
        calm_truth = calm_simulator.join()
        calm.wait_caught_up(timeout=300)
        print(
            f"\n{messages_sent(truth):,} messages; kill -9 at (s, offers counted) {kills}; "
            f"{time.monotonic() - began:.0f} s"
        )
        assert_matches_truth(crashed, truth)
        assert_matches_truth(calm, calm_truth)
        assert counts(crashed.metrics()) == counts(calm.metrics())
        for topic in ("rates", "kpis"):
            after_crashes = outputs(crashed.topics[topic])
            assert len(after_crashes) > 100, topic
            assert after_crashes == outputs(calm.topics[topic]), topic
