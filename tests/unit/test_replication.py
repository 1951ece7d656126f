"""UPSELL_REPLICATION_FACTOR: parsed in one line, resolved against the cluster's size, and
turned into the topic configs that make an acknowledged write survive one broker's loss."""

from __future__ import annotations

from typing import Any

import pytest

from stream_app.runtime import topics
from stream_app.runtime.topics import durability_config, replication_factor
from stream_app.settings import Settings, SettingsError


@pytest.mark.parametrize(("raw", "expected"), [("", None), (" ", None), ("1", 1), (" 3 ", 3)])
def test_the_replication_factor_setting(raw: str, expected: int | None) -> None:
    assert Settings.from_env({"UPSELL_REPLICATION_FACTOR": raw}).replication_factor == expected


@pytest.mark.parametrize("raw", ["0", "-1", "three", "2.5", "²", "3x"])
def test_a_malformed_replication_factor_is_one_line(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"UPSELL_REPLICATION_FACTOR": raw})
    message = str(caught.value)
    assert message.startswith("UPSELL_REPLICATION_FACTOR: ")
    assert repr(raw) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("configured", "brokers", "expected"),
    [
        (None, 1, 1),
        (None, 2, 2),
        (None, 3, 3),
        (None, 5, 3),
        (None, 0, 1),
        (1, 3, 1),
        (2, 5, 2),
        (4, 5, 4),
    ],
)
def test_the_replication_factor_resolves_from_the_cluster(
    configured: int | None, brokers: int, expected: int
) -> None:
    assert replication_factor(configured, brokers) == expected


@pytest.mark.parametrize(("replicas", "min_isr"), [(1, "1"), (2, "1"), (3, "2"), (5, "4")])
def test_min_insync_replicas_is_one_less_than_the_replicas(replicas: int, min_isr: str) -> None:
    assert durability_config(replicas) == {"min.insync.replicas": min_isr}


class FakeAdmin:
    """The admin client calls ensure_topics makes, against a cluster of `brokers`."""

    def __init__(self, brokers: int) -> None:
        self.brokers = brokers
        self.requests: dict[str, Any] = {}

    def list_topics(self) -> list[str]:
        return []

    def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n} for n in range(self.brokers)]}

    def create_topics(self, request: dict[str, Any], raise_errors: bool) -> dict[str, Any]:
        self.requests.update(request)
        return {"topics": [{"name": name, "error_code": 0} for name in request]}

    def wait_for_topics(self, names: list[str], timeout_ms: int) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("env", "brokers", "replicas", "min_isr"),
    [
        ({}, 1, 1, "1"),
        ({}, 3, 3, "2"),
        ({}, 6, 3, "2"),
        ({"UPSELL_REPLICATION_FACTOR": "2"}, 6, 2, "1"),
    ],
)
def test_every_created_topic_gets_the_replication_and_min_isr(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], brokers: int, replicas: int, min_isr: str
) -> None:
    admin = FakeAdmin(brokers)
    monkeypatch.setattr(topics, "make_admin", lambda settings, **kwargs: admin)
    settings = Settings.from_env(env)
    created = topics.ensure_topics(settings)
    assert created == [spec.name for spec in topics.topic_specs(settings)]
    assert {
        name: (request["replication_factor"], request["configs"]["min.insync.replicas"])
        for name, request in admin.requests.items()
    } == {name: (replicas, min_isr) for name in created}
