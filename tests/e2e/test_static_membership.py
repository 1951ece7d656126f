"""A worker restarted after kill -9 takes its predecessor's place in the group at once
(static membership, UPSELL_INSTANCE_ID), and one stopped with SIGTERM leaves at once.

With dynamic membership the dead worker's member would hold its share of the partitions
until the session timeout (90 s here), while its successor ran ahead on the rest.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient

from tests.e2e.harness import BROKER, Deployment, deployment, wait_until
from tests.e2e.resilience import Simulator
from tests.e2e.test_simulated_truth import assert_matches_truth

ENV = {"UPSELL_SESSION_TIMEOUT": "90s"}
# Well inside the session timeout: a dead member still in the group by then is not
# going away by itself before the test ends.
WAIT_S = 30


def members(service: Deployment) -> list[dict[str, Any]]:
    admin = KafkaAdminClient(bootstrap_servers=BROKER)
    try:
        group: dict[str, Any] = admin.describe_groups([service.name])[service.name]
    finally:
        admin.close()
    return list(group["members"])


def assigned(member: dict[str, Any]) -> set[tuple[str, int]]:
    return {
        (topic["topic"], partition)
        for topic in member["member_assignment"]["assigned_partitions"]
        for partition in topic["partitions"]
    }


def test_a_restarted_worker_takes_back_its_place_and_a_stopped_one_leaves(
    data_dir: Path,
) -> None:
    with deployment(data_dir, extra_env=ENV) as service:
        created = service.cli("topics", "create")
        assert created.returncode == 0, created.stderr
        inputs = {
            (service.topics[kind], partition)
            for kind in ("offers", "purchases")
            for partition in range(service.partitions)
        }
        own_id = f"{socket.gethostname()}:{service.web_port}"
        service.start_worker()
        simulator = Simulator(service, ("--count", "3000", "--seed", "5", "--rate", "2000"))
        simulator.start()

        def alone() -> bool:
            found = members(service)
            return (
                len(found) == 1
                and found[0]["group_instance_id"] == own_id
                and inputs <= assigned(found[0])
            )

        wait_until(alone, WAIT_S, "the first worker alone in its group")
        assert service.stop_worker(sig=signal.SIGKILL) == -signal.SIGKILL
        service.start_worker()
        # The successor holds every input partition while the killed worker's session
        # (90 s) has not expired: it took the same place, not a new one beside it.
        wait_until(alone, WAIT_S, "the restarted worker alone, holding every input partition")

        second = service.start_worker()
        wait_until(lambda: len(members(service)) == 2, WAIT_S, "the second worker in the group")
        assert service.stop_worker(sig=signal.SIGTERM) == 0
        wait_until(alone, WAIT_S, f"the worker on {second} gone after SIGTERM")

        truth = simulator.join()
        service.wait_caught_up(timeout=180)
        assert_matches_truth(service, truth)
