"""EventIdMemory: what is a duplicate, and when an id is forgotten, whatever the order
the ids were remembered in (ts order goes to the cheap queue, the rest to a heap)."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.domain.dedupe import EventIdMemory

HORIZON = 100


class _HeapMemory:
    """The reference: one heap of (ts, event_id) entries, as the memory was first written."""

    def __init__(self, horizon_ms: int) -> None:
        self._horizon_ms = horizon_ms
        self.seen: dict[str, int] = {}
        self._expiry: list[tuple[int, str]] = []

    def remember(self, event_id: str, ts: int) -> None:
        self.seen[event_id] = ts
        heapq.heappush(self._expiry, (ts, event_id))

    def forget_expired(self, stream_time: int) -> list[str]:
        gone: list[str] = []
        while self._expiry and self._expiry[0][0] + self._horizon_ms < stream_time:
            remembered_ts, event_id = heapq.heappop(self._expiry)
            if self.seen.get(event_id) == remembered_ts:
                del self.seen[event_id]
                gone.append(event_id)
        return gone


def test_an_id_is_a_duplicate_until_stream_time_passes_ts_plus_horizon() -> None:
    memory = EventIdMemory(HORIZON)
    memory.remember("a", 1_000)
    assert memory.is_duplicate("a", None)
    assert memory.is_duplicate("a", 1_000 + HORIZON)
    assert not memory.is_duplicate("a", 1_000 + HORIZON + 1)
    assert not memory.is_duplicate("b", 1_000)
    assert memory.forget_expired(1_000 + HORIZON) == []
    assert memory.forget_expired(1_000 + HORIZON + 1) == ["a"]
    assert "a" not in memory and len(memory) == 0


def test_ids_remembered_out_of_ts_order_are_forgotten_in_ts_then_id_order() -> None:
    memory = EventIdMemory(HORIZON)
    for event_id, ts in [("c", 10), ("b", 10), ("z", 30), ("a", 5), ("y", 20), ("x", 10)]:
        memory.remember(event_id, ts)
    assert memory.forget_expired(25 + HORIZON) == ["a", "b", "c", "x", "y"]
    assert memory.ts_of("z") == 30 and len(memory) == 1


def test_an_id_remembered_again_goes_with_its_latest_ts() -> None:
    memory = EventIdMemory(HORIZON)
    memory.remember("a", 10)
    memory.remember("b", 20)
    memory.remember("a", 50)  # expired for dedupe at stream time 111, not yet forgotten
    assert memory.forget_expired(21 + HORIZON) == ["b"]
    assert memory.ts_of("a") == 50
    memory.remember("a", 5)  # back below: an older entry of it is no longer stale
    assert memory.forget_expired(21 + HORIZON) == ["a"]
    assert memory.forget_expired(51 + HORIZON) == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("remember"), st.sampled_from("abcdefgh"), st.integers(0, 400)),
            st.tuples(st.just("advance"), st.just(""), st.integers(0, 60)),
        ),
        max_size=80,
    )
)
def test_same_duplicates_and_same_forgotten_ids_in_the_same_order_as_one_heap(
    steps: list[tuple[str, str, int]],
) -> None:
    _same_as_one_heap(steps)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            # ts moves up by the step (nearly always in order, as ids come in a stream),
            # sometimes back down: ids go to the ordered log and, now and then, aside.
            st.tuples(st.just("remember"), st.sampled_from("abcd"), st.integers(-5, 40)),
            st.tuples(st.just("advance"), st.just(""), st.integers(0, 120)),
        ),
        max_size=120,
    )
)
def test_ids_nearly_in_ts_order_remembered_again_match_one_heap(
    steps: list[tuple[str, str, int]],
) -> None:
    ts = 0
    ordered: list[tuple[str, str, int]] = []
    for step, event_id, n in steps:
        if step == "remember":
            ts = max(0, ts + n)
            ordered.append((step, event_id, ts))
        else:
            ordered.append((step, event_id, n))
    _same_as_one_heap(ordered)


def _same_as_one_heap(steps: list[tuple[str, str, int]]) -> None:
    """Every step's duplicate check, forgotten ids and remembered ts match the reference."""
    memory, reference = EventIdMemory(HORIZON), _HeapMemory(HORIZON)
    stream_time = 0
    for step, event_id, n in steps:
        if step == "remember":
            # The partition remembers only what is not a duplicate; restores remember anything.
            assert memory.is_duplicate(event_id, stream_time) == (
                event_id in reference.seen and stream_time <= reference.seen[event_id] + HORIZON
            )
            memory.remember(event_id, n)
            reference.remember(event_id, n)
        else:
            stream_time += n
            assert memory.forget_expired(stream_time) == reference.forget_expired(stream_time)
        assert {e: memory.ts_of(e) for e in "abcdefgh" if e in memory} == reference.seen
        assert len(memory) == len(reference.seen)
