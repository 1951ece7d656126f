"""What /metrics, /healthz, /api/rates and the live page read of the worker's state.

One typed, read-only face over the stages: the serving modules never reach into a stage's
dictionaries themselves. Each call reads the state as it is now (the stages change it on
the same event loop, between two reads), so one page or scrape reads what it needs once.
"""

from __future__ import annotations

from pathlib import Path

from stream_app.domain.bands import Bands
from stream_app.domain.board import RatesBoard
from stream_app.domain.drops import DropDetector
from stream_app.domain.totals import Totals
from stream_app.domain.window_config import WindowConfig
from stream_app.pipeline import Pipeline
from stream_app.stages.publish import ActiveAlert


class ReadModel:
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        settings = pipeline.settings
        self.config: WindowConfig = pipeline.config
        self.bands: Bands = pipeline.bands
        self.window_labels: list[str] = [size.label for size in settings.windows]
        self.input_topics: tuple[str, ...] = tuple(settings.input_topics)
        self.demo_info: Path | None = settings.demo_info

    @property
    def version(self) -> int:
        """Moves whenever anything read here may have changed."""
        return self._pipeline.version

    def totals(self) -> Totals:
        """The durable counters, summed over the customer partitions this worker owns."""
        totals = Totals()
        for state in list(self._pipeline.partitions.values()):
            totals.add(state.totals)
        return totals

    def customer_partitions(self) -> list[int]:
        """The events-by-customer partitions whose state is loaded here."""
        return sorted(self._pipeline.partitions)

    def boards(self) -> list[RatesBoard]:
        """The rates boards held here (one worker of a group holds the board)."""
        return list(self._pipeline.boards.values())

    def board_partitions(self) -> list[int]:
        return sorted(self._pipeline.boards)

    def detectors(self) -> list[DropDetector]:
        """The rate-drop detectors beside the boards held here."""
        return list(self._pipeline.detectors.values())

    def active_alerts(self) -> list[ActiveAlert]:
        return self._pipeline.active_alerts()

    @property
    def events_in(self) -> int:
        """Input messages this worker has read and validated since it started."""
        return self._pipeline.events_in

    def events_in_of(self, topic: str) -> int:
        return self._pipeline.events_in_by_topic.get(topic, 0)

    def lag(self) -> list[tuple[tuple[str, int], int]]:
        """Records not yet read per owned partition, as of its last batch, by partition."""
        return sorted(self._pipeline.lag.items())
