"""The worker's three stages run in one process without Kafka: input records through
validate, the events-by-customer topic, attribute, the partials topic and publish, with
each internal topic kept as a list per partition and read in offset order."""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from stream_app.pipeline import Pipeline
from stream_app.runtime.state_store import PartitionStore
from stream_app.settings import Settings
from stream_app.stages.messages import Output, Record
from tests.unit.test_pipeline_drops import FakeRecord, FakeTable


class InProcessWorker:
    """One worker owning every partition; `published` holds every rates/KPI record."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pipeline = Pipeline(
            settings,
            PartitionStore(FakeTable(), keep_copy=False),
            PartitionStore(FakeTable(), keep_copy=False),
        )
        self._input_offsets: dict[tuple[str, int], int] = defaultdict(int)
        self._log: dict[tuple[str, int], list[FakeRecord]] = defaultdict(list)
        self._read: dict[tuple[str, int], int] = defaultdict(int)
        self.published: list[tuple[str, str, dict[str, Any]]] = []
        self.dead_letters: list[Output] = []

    def send(self, topic: str, value: dict[str, Any] | bytes, partition: int = 0) -> None:
        """Produce one input record and run every stage until nothing is left to read."""
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        offset = self._input_offsets[(topic, partition)]
        self._input_offsets[(topic, partition)] += 1
        self._route(self.pipeline.validate({(topic, partition): [FakeRecord(offset, None, raw)]}))
        self.drain()

    def validate(
        self,
        batches: dict[tuple[str, int], Sequence[Record]],
        behind: dict[tuple[str, int], bool | None],
        now: float,
        quiet: frozenset[tuple[str, int]] = frozenset(),
    ) -> None:
        """One pass of the hot path over fetched input batches, with the lag and the fetch
        answers it saw, then every stage until nothing is left to read."""
        self._route(self.pipeline.validate(batches, behind=behind, now=now, quiet=quiet))
        self.drain()

    def drain(self) -> None:
        settings = self.settings
        while True:
            pending = [
                (tp, records[self._read[tp] :])
                for tp, records in self._log.items()
                if self._read[tp] < len(records)
            ]
            if not pending:
                return
            for (topic, partition), records in pending:
                self._read[(topic, partition)] += len(records)
                if topic == settings.topic_events:
                    self._route(self.pipeline.attribute(partition, records))
                    self.pipeline.persist(topic, partition)
                else:
                    self._route(self.pipeline.publish(partition, records))
                    self.pipeline.persist(topic, partition)

    def _route(self, outputs: list[Output]) -> None:
        settings = self.settings
        for output in outputs:
            if output.topic in (settings.topic_events, settings.topic_partials):
                partition = output.partition
                if partition is None:
                    partition = zlib.crc32(output.key or b"") % settings.partitions
                log = self._log[(output.topic, partition)]
                log.append(FakeRecord(len(log), output.key, output.value))
            elif output.topic == settings.topic_deadletter:
                self.dead_letters.append(output)
            elif output.topic in (settings.topic_rates, settings.topic_kpis):
                assert output.key is not None and output.value is not None
                self.published.append((output.topic, output.key.decode(), json.loads(output.value)))

    def last_records(self, topic: str) -> dict[str, dict[str, Any]]:
        """What a compacted topic keeps: the last record per key."""
        return {
            key: record
            for published_topic, key, record in self.published
            if published_topic == topic
        }
