"""Which event_ids were already processed, remembered for the attribution window."""

from __future__ import annotations

import heapq


class EventIdMemory:
    """Remembers each accepted event_id with its ts until stream time passes ts + horizon.

    Whether an id is still remembered is decided from stream time at the moment of the
    check, not from when clean-up last ran, so results never depend on batch boundaries.
    """

    def __init__(self, horizon_ms: int) -> None:
        self._horizon_ms = horizon_ms
        self._seen: dict[str, int] = {}
        # (ts, event_id): the ts object is the one in _seen, where ts + horizon would be
        # one more int per remembered event.
        self._expiry: list[tuple[int, str]] = []

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
        heapq.heappush(self._expiry, (ts, event_id))

    def forget_expired(self, stream_time: int) -> list[str]:
        """Drop ids whose memory ran out; returns them so their stored copies can go too."""
        gone: list[str] = []
        while self._expiry and self._expiry[0][0] + self._horizon_ms < stream_time:
            remembered_ts, event_id = heapq.heappop(self._expiry)
            ts = self._seen.get(event_id)
            if ts is not None and ts == remembered_ts:
                del self._seen[event_id]
                gone.append(event_id)
        return gone

    def ts_of(self, event_id: str) -> int | None:
        return self._seen.get(event_id)
