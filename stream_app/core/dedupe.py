"""Which event_ids were already processed, remembered for the attribution window."""

from __future__ import annotations

import heapq
from collections import deque


class EventIdMemory:
    """Remembers each accepted event_id with its ts until stream time passes ts + horizon.

    Whether an id is still remembered is decided from stream time at the moment of the
    check, not from when clean-up last ran, so results never depend on batch boundaries.
    """

    def __init__(self, horizon_ms: int) -> None:
        self._horizon_ms = horizon_ms
        self._seen: dict[str, int] = {}
        # Every remembered (ts, event_id) waits here to be checked once ts + horizon is
        # behind stream time. Those remembered in ts order (none below the one before,
        # nearly all of them) wait in two deques side by side, 16 bytes each where a heap
        # entry is a 2-tuple (72 bytes with its slot); the others wait in a heap.
        self._in_order_ids: deque[str] = deque()
        self._in_order_ts: deque[int] = deque()
        self._late: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._seen

    def is_duplicate(self, event_id: str, stream_time: int | None) -> bool:
        ts = self._seen.get(event_id)
        if ts is None:
            return False
        return stream_time is None or stream_time <= ts + self._horizon_ms

    def remember(self, event_id: str, ts: int) -> None:
        self._seen[event_id] = ts
        in_order_ts = self._in_order_ts
        if not in_order_ts or ts >= in_order_ts[-1]:
            in_order_ts.append(ts)
            self._in_order_ids.append(event_id)
        else:
            heapq.heappush(self._late, (ts, event_id))

    def forget_expired(self, stream_time: int) -> list[str]:
        """Drop ids whose memory ran out; returns them so their stored copies can go too,
        in (ts, event_id) order.

        An id goes when an entry of its current ts comes up (an older entry of an id
        remembered again is stale): every id whose ts + horizon < stream_time, and only
        those, whatever queue its entries are in.
        """
        cutoff = stream_time - self._horizon_ms  # ts + horizon < stream_time
        in_order_ts = self._in_order_ts
        late = self._late
        if not ((in_order_ts and in_order_ts[0] < cutoff) or (late and late[0][0] < cutoff)):
            return []
        seen = self._seen
        gone: list[tuple[int, str]] = []
        in_order_ids = self._in_order_ids
        while in_order_ts and in_order_ts[0] < cutoff:
            remembered_ts = in_order_ts.popleft()
            event_id = in_order_ids.popleft()
            if seen.get(event_id) == remembered_ts:
                del seen[event_id]
                gone.append((remembered_ts, event_id))
        while late and late[0][0] < cutoff:
            remembered_ts, event_id = heapq.heappop(late)
            if seen.get(event_id) == remembered_ts:
                del seen[event_id]
                gone.append((remembered_ts, event_id))
        gone.sort()
        return [event_id for _, event_id in gone]

    def ts_of(self, event_id: str) -> int | None:
        return self._seen.get(event_id)
