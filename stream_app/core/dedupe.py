"""Which event_ids were already processed, remembered for the attribution window."""

from __future__ import annotations

from stream_app.core.expiry import ExpiryQueue


class EventIdMemory:
    """Remembers each accepted event_id with its ts until stream time passes ts + horizon.

    Whether an id is still remembered is decided from stream time at the moment of the
    check, not from when clean-up last ran, so results never depend on batch boundaries.
    """

    def __init__(self, horizon_ms: int) -> None:
        self._horizon_ms = horizon_ms
        self._seen: dict[str, int] = {}
        # Every remembered (ts, event_id) is checked once ts + horizon is behind stream time.
        self._expiry: ExpiryQueue[str] = ExpiryQueue(_itself)

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
        self._expiry.push(ts, event_id)

    def forget_expired(self, stream_time: int) -> list[str]:
        """Drop ids whose memory ran out; returns them so their stored copies can go too,
        in (ts, event_id) order.

        An id goes when an entry of its current ts comes up (an older entry of an id
        remembered again is stale): every id whose ts + horizon < stream_time, and only
        those.
        """
        seen = self._seen
        gone: list[str] = []
        for remembered_ts, event_id in self._expiry.take_due(stream_time - self._horizon_ms):
            if seen.get(event_id) == remembered_ts:
                del seen[event_id]
                gone.append(event_id)
        return gone

    def ts_of(self, event_id: str) -> int | None:
        return self._seen.get(event_id)


def _itself(event_id: str) -> str:
    return event_id
