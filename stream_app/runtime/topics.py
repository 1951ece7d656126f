"""The service's topics, and creating the missing ones (`upsell-stream topics create`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_app.runtime.kafka_clients import (
    describe_error,
    make_admin,
    quiet_kafka_logs,
    refused_login,
    refused_message,
    watch_auth,
)
from stream_app.settings import Settings

# Unprocessed internal records must outlive any plausible worker outage.
INTERNAL_RETENTION_MS = 7 * 86_400_000
CONNECT_TIMEOUT_S = 15.0
# What the worker's producer sends at most (faust_app): a state journal holds a whole
# batch's changes, a dead-letter copy is an input message plus headers (above the 1 MB an
# input topic takes by default), a forwarded event is as large as its strings.
LARGE_MESSAGE_BYTES = 16 * 1024 * 1024
READY_TIMEOUT_S = 30.0
# The worker's tables; Faust names a table's changelog `<app id>-<table>-changelog`.
PARTITION_TABLE = "partition-state"
BOARD_TABLE = "board-state"
# Kafka compacts only rolled segments, and by default rolls at 1 GB or after 7 days and
# cleans once half a log is dirty: a board's changelog grew to 958 MB in one segment, all
# of it replayed by every restart. Segments that roll every minute (or at 16 MB) and a
# cleaner that starts at 10 % dirty keep a changelog near the size of the live state plus
# about a minute of writes (the cleaner merges small cleaned segments again). Tombstones
# (the state store deletes its journals this way) stay readable for an hour: a recovery
# reading from the start must see a delete whose older value it read, and takes seconds,
# not an hour. The worker writes the records zstd-compressed (BatchSender) and the broker
# keeps them so: a changelog takes about the disk gzip gave it, while the broker's own
# gzip of the plain records (about 0.8 KB per event) held the worker's sends up for half
# of its run in bench/run.py; and zstd reads back faster than gzip on a restart.
CHANGELOG_COMPRESSION = "zstd"
CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "compression.type": CHANGELOG_COMPRESSION,
    "segment.bytes": str(16 * 1024 * 1024),
    "segment.ms": str(60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": str(60 * 60 * 1000),
    "max.message.bytes": str(LARGE_MESSAGE_BYTES),
}


class TopicsError(RuntimeError):
    """Topics could not be created or did not become usable; the message is one line."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def replication_factor(configured: int | None, brokers: int) -> int:
    """UPSELL_REPLICATION_FACTOR, or min(3, brokers) when it is left empty."""
    return configured if configured is not None else max(1, min(3, brokers))


def durability_config(replicas: int) -> dict[str, str]:
    """Topic configs that make acks=all mean "on more than one broker" once there are
    replicas: a write is acknowledged by all in-sync replicas, at least RF - 1 of them, so
    that one broker's loss loses no acknowledged record and leaves the topic writable.
    Explicit for one replica too: a cluster's default min.insync.replicas may be higher."""
    return {"min.insync.replicas": str(max(1, replicas - 1))}


def topic_specs(settings: Settings) -> list[TopicSpec]:
    n = settings.partitions
    large = {"max.message.bytes": str(LARGE_MESSAGE_BYTES)}
    internal = {"cleanup.policy": "delete", "retention.ms": str(INTERNAL_RETENTION_MS), **large}
    compacted = {"cleanup.policy": "compact"}
    return [
        TopicSpec(settings.topic_offers, n),
        TopicSpec(settings.topic_purchases, n),
        TopicSpec(settings.topic_events, n, dict(internal)),
        # One partition: the publishing stage must see every partition's partials in order.
        TopicSpec(settings.topic_partials, 1, dict(internal)),
        TopicSpec(settings.topic_rates, n, dict(compacted)),
        TopicSpec(settings.topic_kpis, n, dict(compacted)),
        TopicSpec(settings.topic_alerts, n),
        TopicSpec(settings.topic_deadletter, n, dict(large)),
        # Created here rather than left to Faust, whose own creation raced the consumer's
        # subscription: "not found in cluster metadata" at start, and a rebalance when the
        # metadata next refreshed, five minutes later.
        TopicSpec(changelog_topic(settings, PARTITION_TABLE), n, dict(CHANGELOG_CONFIG)),
        TopicSpec(changelog_topic(settings, BOARD_TABLE), 1, dict(CHANGELOG_CONFIG)),
    ]


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def _unreachable(settings: Settings, error: BaseException) -> TopicsError:
    return TopicsError(
        f"cannot reach Kafka at {settings.bootstrap_servers}: {describe_error(error)}; "
        "is it running? try `upsell-stream kafka start`"
    )


def _connect(settings: Settings, timeout_s: float) -> Any:
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    with watch_auth() as watch:
        try:
            return make_admin(
                settings, bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms
            )
        except (KafkaError, OSError) as error:
            if watch.refused or refused_login(settings):
                raise TopicsError(refused_message(settings)) from None
            raise _unreachable(settings, error) from None


def ensure_topics(
    settings: Settings,
    specs: Sequence[TopicSpec] | None = None,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> list[str]:
    """Create the missing topics; return the names this call created.

    Returns once every topic of `specs` has a leader for each partition, so that the
    caller can produce and consume at once.
    """
    wanted = list(topic_specs(settings) if specs is None else specs)
    admin = _connect(settings, connect_timeout_s)
    try:
        return _ensure(settings, admin, wanted, ready_timeout_s)
    finally:
        admin.close()


def _ensure(
    settings: Settings,
    admin: Any,
    wanted: list[TopicSpec],
    ready_timeout_s: float,
) -> list[str]:
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        existing = set(admin.list_topics())
        brokers = len(admin.describe_cluster()["brokers"])
    except KafkaError as error:
        raise _unreachable(settings, error) from None
    missing = [spec for spec in wanted if spec.name not in existing]
    created: list[str] = []
    if missing:
        replication = replication_factor(settings.replication_factor, brokers)
        request = {
            spec.name: {
                "num_partitions": spec.partitions,
                "replication_factor": replication,
                "configs": {**spec.config, **durability_config(replication)},
            }
            for spec in missing
        }
        try:
            response = admin.create_topics(request, raise_errors=False)
        except KafkaError as error:
            raise TopicsError(f"could not create topics: {describe_error(error)}") from None
        for result in response["topics"]:
            code = result["error_code"]
            # Another worker starting at the same moment may have created it first.
            if code == TopicAlreadyExistsError.errno:
                continue
            if code != 0:
                reason = result.get("error_message") or f"error code {code}"
                raise TopicsError(f"could not create topic {result['name']}: {reason}")
            created.append(result["name"])
    _wait_ready(admin, [spec.name for spec in wanted], ready_timeout_s)
    order = [spec.name for spec in wanted]
    return sorted(created, key=order.index)


def _wait_ready(admin: Any, names: list[str], timeout_s: float) -> None:
    from kafka.errors import KafkaError

    try:
        admin.wait_for_topics(names, timeout_ms=int(timeout_s * 1000))
    except KafkaError as error:
        raise TopicsError(
            f"topics not usable after {timeout_s:.0f} s (no leader yet?): {describe_error(error)}"
        ) from None


def partition_counts(admin: Any, names: Sequence[str]) -> dict[str, int]:
    return {topic["name"]: len(topic["partitions"]) for topic in admin.describe_topics(list(names))}


def create_all(settings: Settings) -> int:
    """`upsell-stream topics create`: one line per topic, or one line on stderr."""
    specs = topic_specs(settings)
    with quiet_kafka_logs():
        try:
            admin = _connect(settings, CONNECT_TIMEOUT_S)
            try:
                created = set(_ensure(settings, admin, specs, READY_TIMEOUT_S))
                counts = partition_counts(admin, [spec.name for spec in specs])
            finally:
                admin.close()
        except TopicsError as error:
            print(f"upsell-stream topics: {error}", file=sys.stderr)
            return 1
        except Exception as error:  # one clear line instead of a trace
            print(f"upsell-stream topics: {describe_error(error)}", file=sys.stderr)
            return 1
    for spec in specs:
        state = "created" if spec.name in created else "already there"
        count = counts.get(spec.name, spec.partitions)
        print(f"{spec.name}: {state} ({count} partition{'' if count == 1 else 's'})")
    return 0
