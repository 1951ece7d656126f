"""Stage 3, publish: window partials -> rates board (changelog) + rates, KPI, alert topics.

The RatesBoard sums the partitions' latest counts and tells which window records to
publish; the DropDetector beside it watches the rates for significant drops.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from stream_app import _engine
from stream_app.domain.bands import Bands
from stream_app.domain.board import RatesBoard
from stream_app.domain.drops import FIRED, DropAlert, DropDetector
from stream_app.domain.fastjson import dumps
from stream_app.domain.immutable import immutable
from stream_app.domain.views import CHANNEL_SEGMENT, Key
from stream_app.domain.window_config import WindowConfig
from stream_app.settings import Settings
from stream_app.stages.messages import Now, Output, PackedStateStore, Record


@immutable
class ActiveAlert:
    """A rate-drop alert that fired and has not resolved yet, for the live page.

    `fired` is the alert as this process published it, with `fired_at_ms` its emitted_at;
    None for one that fired before the worker (re)started, known only from the detector's
    restored state.
    """

    label: str
    key: Key
    fired: DropAlert | None
    fired_at_ms: int | None


class PublishStage:
    def __init__(
        self, settings: Settings, config: WindowConfig, bands: Bands, board_store: PackedStateStore
    ) -> None:
        self.settings = settings
        self.config = config
        self.bands = bands
        self._board_store = board_store
        self.boards: dict[int, RatesBoard] = {}
        # Rate-drop detection beside each board, persisted with it.
        self.detectors: dict[int, DropDetector] = {}
        # The fired alert of every series whose drop is active, as published: (alert, ms).
        self._fired_alerts: dict[tuple[str, Key], tuple[DropAlert, int]] = {}

    def has_state(self, partition: int) -> bool:
        return partition in self.boards

    def next_offset(self, partition: int) -> int | None:
        board = self.boards.get(partition)
        return None if board is None else board.next_offset

    def keep_only(self, owned: Container[int]) -> None:
        """A rebalance ended: a board not assigned any more belongs to another worker."""
        for partition in [p for p in self.boards if p not in owned]:
            del self.boards[partition]
            self.detectors.pop(partition, None)

    def load(self, partition: int) -> RatesBoard:
        """The board and its detector, restored from the recovered table the first time."""
        board = self.boards.get(partition)
        if board is None:
            entries = self._board_store.load(partition)
            board = RatesBoard.restore(self.config, self.settings.partitions, entries)
            self.boards[partition] = board
            self.detectors[partition] = DropDetector.restore(self.settings.drops, entries)
        return board

    def handle(self, partition: int, records: Sequence[Record], now: Now) -> list[Output]:
        board = self.load(partition)
        for record in records:
            if record.value is not None:
                board.apply_encoded(record.value, record.offset)
        now_ms = int(now.wall * 1000)
        # Before take_published, which forgets the windows that became final.
        taken = self.detectors[partition].take_alerts(board)
        for alert in taken:
            if alert.state == FIRED:
                self._fired_alerts[(alert.label, alert.key)] = (alert, now_ms)
            else:
                self._fired_alerts.pop((alert.label, alert.key), None)
        alerts = [
            Output(
                self.settings.topic_alerts, alert.topic_key.encode(), dumps(alert.as_json(now_ms))
            )
            for alert in taken
        ]
        return [
            Output(
                self.settings.topic_rates if view is CHANNEL_SEGMENT else self.settings.topic_kpis,
                key,
                value,
            )
            for view, key, value in board.take_published(self.bands, now_ms)
        ] + alerts

    def active_alerts(self) -> list[ActiveAlert]:
        """Every rate-drop alert that fired and has not resolved, by window, then key."""
        active = []
        for detector in list(self.detectors.values()):
            for label, key, firing in detector.active():
                if firing:
                    fired, fired_at_ms = self._fired_alerts.get((label, key), (None, None))
                    active.append(ActiveAlert(label, key, fired, fired_at_ms))
        return active

    def persist(self, partition: int) -> None:
        board = self.boards.get(partition)
        if board is not None:
            self._board_store.write_packed(
                partition,
                board.take_packed_changes()
                + _engine.pack_entries(self.detectors[partition].take_changes()),
            )
