"""Items waiting for stream time to pass their ts, taken in (ts, tie-break) order.

Remembered event_ids and kept offers each wait like this for their memory to run out,
one entry per item held: the entry's size is a large share of the memory per open offer.
Nearly every item comes in ts order (none below the one before): those wait in two
deques side by side, ts and item, 16 bytes each, where a heap entry is a tuple (72 bytes
and more with its slot); an item below the newest ts queued waits in a heap. What is due
is taken from both and sorted, so which items come out, and their order, are those of
one heap of everything.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ExpiryQueue(Generic[T]):
    def __init__(self, tie_break: Callable[[T], Any]) -> None:
        # Orders items of the same ts (items themselves need not be comparable).
        self._tie_break = tie_break
        self._in_order_ts: deque[int] = deque()
        self._in_order_items: deque[T] = deque()
        self._late: list[tuple[int, Any, T]] = []

    def push(self, ts: int, item: T) -> None:
        in_order_ts = self._in_order_ts
        if not in_order_ts or ts >= in_order_ts[-1]:
            in_order_ts.append(ts)
            self._in_order_items.append(item)
        else:
            heapq.heappush(self._late, (ts, self._tie_break(item), item))

    def take_due(self, cutoff: int) -> list[tuple[int, T]]:
        """Every entry whose ts < cutoff, in (ts, tie-break) order, with the ts it was
        pushed with (an item pushed again may have had another ts)."""
        in_order_ts, late = self._in_order_ts, self._late
        if not ((in_order_ts and in_order_ts[0] < cutoff) or (late and late[0][0] < cutoff)):
            return []
        tie_break, in_order_items = self._tie_break, self._in_order_items
        due: list[tuple[int, Any, T]] = []
        while in_order_ts and in_order_ts[0] < cutoff:
            item = in_order_items.popleft()
            due.append((in_order_ts.popleft(), tie_break(item), item))
        while late and late[0][0] < cutoff:
            due.append(heapq.heappop(late))
        if len(due) > 1:
            due.sort(key=_ts_and_tie_break)
        return [(ts, item) for ts, _, item in due]


def _ts_and_tie_break(entry: tuple[int, Any, Any]) -> tuple[int, Any]:
    return entry[0], entry[1]
