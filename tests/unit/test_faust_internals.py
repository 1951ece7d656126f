"""Every private attribute of faust-streaming, mode and aiokafka that the worker reaches
(stream_app/runtime/faust_internals.py) exists on the installed libraries' real classes and
instances: an upgrade that moves one fails here, by name, not in a running worker."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiokafka
import faust
import mode
import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.tables.recovery import Recovery

from stream_app.runtime import faust_internals

SOURCE = Path(inspect.getfile(faust_internals))


def private_names_used() -> set[str]:
    """Every `x._name` the module reads or writes (its own names aside)."""
    tree = ast.parse(SOURCE.read_text())
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
    }


@pytest.fixture(scope="module")
def instances() -> Iterator[dict[str, Any]]:
    """Real objects of the libraries, made without a broker (nothing connects)."""
    loop = asyncio.new_event_loop()
    made: dict[str, Any] = {}

    async def make() -> None:
        app = faust.App("internals-probe", broker="kafka://127.0.0.1:1", store="memory://")
        table = app.Table("probe", partitions=1, default=None)
        consumer: Any = app.consumer
        tables: Any = app.tables
        aio_producer = aiokafka.AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        aio_consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
        # What a started consumer holds; its coordination (a broker round trip) is stopped.
        coordinator = GroupCoordinator(
            aio_consumer._client, SubscriptionState(), group_id="probe", group_instance_id="i"
        )
        coordinator._coordination_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await coordinator._coordination_task
        made.update(
            {
                "faust consumer": consumer,
                "faust consumer thread": consumer._thread,
                "aiokafka consumer": aio_consumer,
                "aiokafka group coordinator": coordinator,
                "faust producer": app.producer,
                "aiokafka producer": aio_producer,
                "aiokafka client": aio_producer.client,
                "mode service": mode.Service(),
                "table": table,
                "memory store": table.data,
                "recovery": tables.recovery,
                "worker": faust.Worker(app, loglevel="warning"),
            }
        )

    loop.run_until_complete(make())
    yield made
    loop.close()


# Where each private name lives: the objects it is read from by faust_internals.
OWNERS = {
    "_fetch_max_wait_ms": ["aiokafka consumer"],
    "_thread": ["faust consumer"],
    "_ensure_consumer": ["faust consumer thread"],
    "_subscription": ["aiokafka consumer"],
    "_consumer": ["faust consumer thread"],
    "_coordinator": ["aiokafka consumer"],
    "_group_instance_id": ["aiokafka group coordinator"],
    "_read_offset": ["faust consumer"],
    "_committed_offset": ["faust consumer"],
    "_stopped": ["faust consumer", "mode service"],
    "_getmany": ["faust consumer"],
    "_get_active_partitions": ["faust consumer"],
    "_to_message": ["faust consumer"],
    "_commit_offsets": ["faust consumer"],
    "_ensure_producer": ["faust producer"],
    "_wait_on_metadata": ["aiokafka client"],
    "_metadata": ["aiokafka producer"],
    "_partitioner": ["aiokafka producer"],
    "_on_changelog_event": ["table"],
    "_to_key": ["table"],
    "_key_partition": ["memory store"],
    "_recovery_started_at": ["recovery"],
    "_active_events_received_at": ["recovery"],
    "_last_flush_at": ["recovery"],
    "_signal_stop_time": ["worker"],
}


def test_every_private_name_the_module_uses_is_checked_here() -> None:
    assert private_names_used() == set(OWNERS), (
        "faust_internals.py and this test's OWNERS name different private attributes"
    )


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_the_private_attribute_exists_on_the_installed_library(
    name: str, instances: dict[str, Any]
) -> None:
    for owner in OWNERS[name]:
        found = instances[owner]
        assert hasattr(found, name), (
            f"{type(found).__module__}.{type(found).__qualname__} has no attribute {name} "
            f"any more (the {owner}): update stream_app/runtime/faust_internals.py"
        )


@pytest.mark.parametrize(("owner", "name"), faust_internals.OVERRIDDEN)
def test_the_overridden_private_method_exists(owner: type, name: str) -> None:
    assert callable(getattr(owner, name, None)), (
        f"{owner.__module__}.{owner.__qualname__}.{name} is gone: the worker's override "
        "of it would never run; update stream_app/runtime"
    )


def test_the_accessors_read_the_real_objects(instances: dict[str, Any]) -> None:
    consumer = instances["aiokafka consumer"]
    faust_internals.set_fetch_max_wait_ms(consumer, 123)
    assert consumer._fetch_max_wait_ms == 123
    assert faust_internals.is_stopped(instances["mode service"]) is False
    assert isinstance(faust_internals.read_offsets(instances["faust consumer"]), dict)
    producer = instances["aiokafka producer"]
    assert faust_internals.producer_metadata(producer) is producer.client.cluster
    assert faust_internals.producer_partitioner(producer)(b"k", [0, 1, 2], [0, 1, 2]) in {0, 1, 2}
    table = instances["table"]
    assert faust_internals.changelog_event_hook(table) is None
    assert faust_internals.key_decoder(table)("k") == "k"
    assert faust_internals.key_partitions(instances["memory store"]) == {}
    assert isinstance(instances["recovery"], Recovery)
    recovery: Any = instances["recovery"]
    assert faust_internals.recovery_began_at(recovery) is None
    faust_internals.mark_recovery_active(recovery, "tp", 5.0)
    assert recovery._active_events_received_at["tp"] == 5.0
    assert recovery._last_flush_at == 5.0
    assert faust_internals.stop_signalled(instances["worker"]) is False


def test_a_static_member_stopped_cleanly_leaves_its_group(instances: dict[str, Any]) -> None:
    """aiokafka decides to leave by the coordinator's group.instance.id alone."""
    coordinator = instances["aiokafka group coordinator"]
    thread = SimpleNamespace(_consumer=SimpleNamespace(_coordinator=coordinator))
    assert "self._group_instance_id is None" in inspect.getsource(
        GroupCoordinator._maybe_leave_group
    )
    faust_internals.leave_group_when_stopped(thread)
    assert coordinator._group_instance_id is None
    faust_internals.leave_group_when_stopped(SimpleNamespace(_consumer=None))  # not started
