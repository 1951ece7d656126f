"""Input partitions merged in event-time order across fetches, as Kafka Streams does.

A worker reads its input partitions a fetch at a time, and a fetch rarely holds every
partition: after a restart with a backlog, the records of one partition can come minutes
of event time ahead of another's. Forwarded as they come, the ones ahead would push
stream time past the others' windows and make them late, and a last-touch purchase could
be decided before its offer arrived. So records wait here until every partition that is
still behind (has records in Kafka not read yet) has shown how far it has got: a record
leaves once no partition behind can still deliver an older one. A partition that has
caught up holds the others back until a fetch of it answers with nothing new (it is
`quiet`: its next record is written after that answer, a live arrival, as Kafka Streams
treats an empty partition whose lag is 0). Caught up means caught up when its last fetch
answered, and a pass of the worker can hand over records fetched seconds before (a
backlog, a loaded machine): records written since are unknown until the next answer,
whenever that comes, so no fixed wait ends the hold. A live stream is held for a fetch
round.

Each partition's records leave in offset order (its order key is the running largest ts,
a reject taking the key of the record before it), so the receiving stage can count each
source item once by its offset. A partition whose lag is not known yet (just assigned,
no fetch answered) counts as behind until a fetch of it tells its lag (a wait longer than
`max_wait_s` is reported); beyond `max_buffered` waiting records the oldest leave anyway,
so memory stays bounded.

The merge is compiled (engine/src/merge.rs): adding a validated batch
(`add_validated`) and releasing what may leave are one call each, whatever the number of
records.
"""

from __future__ import annotations

from stream_app._engine import EventTimeMerge

__all__ = ["EventTimeMerge"]
