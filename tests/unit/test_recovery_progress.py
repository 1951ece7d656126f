"""What a recovering worker tells /healthz and /api/rates: progress, not "ask another"."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from stream_app.pipeline import Pipeline
from stream_app.runtime.recovery import RecoveryProgress, recovery_document
from stream_app.runtime.state_store import PartitionStore
from stream_app.serving.read_model import ReadModel
from stream_app.serving.web import health_document, no_board_document
from stream_app.settings import Settings
from tests.unit.test_pipeline_drops import FakeTable


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class FakeRecovery:
    """The parts of faust.tables.recovery.Recovery that the progress reads."""

    in_recovery: bool = False
    _recovery_started_at: float | None = None
    active_tps: set[TP] = field(default_factory=set)
    active_offsets: Counter[TP] = field(default_factory=Counter)
    active_highwaters: Counter[TP] = field(default_factory=Counter)


STATE = TP("upsell-partition-state-changelog", 3)
BOARD = TP("upsell-board-state-changelog", 0)


def test_the_document_counts_records_replayed_of_the_total_and_estimates_the_rest() -> None:
    document = recovery_document([("b", 0, 1_000, 4_000), ("a", 3, 3_000, 4_000)], elapsed_s=2.0)
    assert document["records_replayed"] == 4_000
    assert document["records_total"] == 8_000
    assert document["fraction"] == 0.5
    assert document["records_per_second"] == 2_000
    assert document["estimated_seconds_left"] == 2.0
    assert [(c["topic"], c["records_replayed"]) for c in document["changelogs"]] == [
        ("a", 3_000),
        ("b", 1_000),
    ]


def test_nothing_replayed_yet_has_no_estimate() -> None:
    document = recovery_document([("a", 0, 0, 500)], elapsed_s=0.0)
    assert document["records_per_second"] is None
    assert document["estimated_seconds_left"] is None
    assert document["fraction"] == 0.0


def test_progress_follows_faust_recovery_from_where_it_began() -> None:
    clock = [100.0]
    recovery = FakeRecovery()
    progress = RecoveryProgress(recovery, clock=lambda: clock[0])
    assert progress.document() is None
    # A recovery begins: the state changelog is read from its start (-1), the board's
    # from offset 199 this worker read before.
    recovery.in_recovery, recovery._recovery_started_at = True, 100.0
    recovery.active_tps = {STATE, BOARD}
    recovery.active_offsets.update({STATE: -1, BOARD: 199})
    recovery.active_highwaters.update({STATE: 9_999, BOARD: 299})
    progress.observe()
    recovery.active_offsets[STATE] = 5_000  # offsets 0..5,000 read
    recovery.active_offsets[BOARD] = 249
    clock[0] = 105.0
    document = progress.document()
    assert document is not None
    by_topic = {c["topic"]: c for c in document["changelogs"]}
    assert by_topic[STATE.topic]["records_replayed"] == 5_001
    assert by_topic[STATE.topic]["records_total"] == 10_000
    assert by_topic[BOARD.topic]["records_replayed"] == 50
    assert by_topic[BOARD.topic]["records_total"] == 100
    assert document["records_per_second"] == round(5_051 / 5)
    # The recovery ends: no progress to tell.
    recovery.in_recovery = False
    assert progress.document() is None
    # The next recovery counts from its own start.
    recovery.in_recovery, recovery._recovery_started_at = True, 200.0
    recovery.active_tps = {BOARD}
    recovery.active_highwaters[BOARD] = 349
    clock[0] = 201.0
    document = progress.document()
    assert document is not None
    assert [(c["records_replayed"], c["records_total"]) for c in document["changelogs"]] == [
        (0, 100)
    ]


def test_healthz_says_recovering_with_progress_and_ok_after() -> None:
    pipeline = Pipeline(Settings(), PartitionStore(FakeTable()), PartitionStore(FakeTable()))
    progress: dict[str, Any] = {"phase": "replaying", "records_replayed": 5}
    recovering = health_document(ReadModel(pipeline), {"events_in": 0}, progress)
    assert recovering["status"] == "recovering"
    assert recovering["recovery"] == progress
    assert recovering["events_in"] == 0
    served = health_document(ReadModel(pipeline), {"events_in": 7}, None)
    assert served["status"] == "ok"
    assert "recovery" not in served


def test_rates_without_a_board_say_recovering_or_held_elsewhere() -> None:
    progress: dict[str, Any] = {"phase": "replaying", "fraction": 0.25}
    recovering = no_board_document(progress)
    assert recovering["state"] == "recovering"
    assert recovering["progress"] == progress
    assert "another worker" not in recovering["error"]
    elsewhere = no_board_document(None)
    assert elsewhere["state"] == "not_held"
    assert "another worker" in elsewhere["error"]
