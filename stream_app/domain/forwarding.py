"""What the validating stage hands to the attributing stage through the internal topic.

Each item carries its source coordinates (topic, partition, offset), so that the
receiving partition can ignore a replay of something it already applied, and the
source partition's stream time before the item (`stamp`), so that stream time moves
as if one worker had read the source partition in order. A tick (no event, no reject)
goes to every partition after each validated batch, so that partitions which received
none of its events still see stream time move.
"""

from __future__ import annotations

from typing import Any

from stream_app.domain.codec import event_from_row, event_to_row
from stream_app.domain.events import Event
from stream_app.domain.fastjson import dumps, loads
from stream_app.domain.immutable import immutable


@immutable
class Forwarded:
    source_topic: str
    source_partition: int
    source_offset: int
    stamp: int | None
    event: Event | None = None
    reject_reason: str | None = None

    @property
    def is_tick(self) -> bool:
        return self.event is None and self.reject_reason is None


def encode_forwarded(item: Forwarded) -> bytes:
    body: list[Any] = [item.source_topic, item.source_partition, item.source_offset, item.stamp]
    if item.event is not None:
        body.append(event_to_row(item.event))
    else:
        body.append(item.reject_reason)
    return dumps(body)


def decode_forwarded(raw: bytes) -> Forwarded:
    topic, partition, offset, stamp, payload = loads(raw)
    if isinstance(payload, list):
        return Forwarded(topic, partition, offset, stamp, event=event_from_row(payload))
    return Forwarded(topic, partition, offset, stamp, reject_reason=payload)


def tick(source_topic: str, source_partition: int, last_offset: int, stream_time: int) -> Forwarded:
    return Forwarded(source_topic, source_partition, last_offset, stream_time)
