"""EventTimeMerge: input partitions leave in event-time order across fetches."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream_app.domain.events import InvalidEvent, validate_batch
from stream_app.domain.merge import EventTimeMerge

A, B = ("offers", 0), ("purchases", 3)


def test_a_partition_ahead_waits_for_one_behind() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=5)
    # After a restart the first fetch holds only A, hours ahead of what B still has.
    for offset, ts in enumerate((100, 200, 300)):
        merge.add(A, offset, ts, f"a{ts}")
    assert merge.release({A: False, B: True}, now=0) == []
    assert merge.positions() == {A: 0}  # nothing committed past what waits
    merge.add(B, 7, 50, "b50")
    merge.add(B, 8, 250, "b250")
    # B is behind still: only what is older than B's newest record may leave.
    out = merge.release({A: False, B: True}, now=1)
    assert [payload for _, _, payload in out] == ["b50", "a100", "a200", "b250"]
    assert merge.positions() == {A: 2, B: 9}
    # B caught up, and a fetch of it found nothing new: the rest leaves.
    out = merge.release({A: False, B: False}, now=2, quiet={B})
    assert [p for _, _, p in out] == ["a300"]
    assert merge.positions() == {A: 3, B: 9}
    assert len(merge) == 0


def test_unknown_lag_counts_as_behind_until_a_fetch_tells_it() -> None:
    """A kill -9 in start-up over a backlog: the first fetches answered for A only, hours
    of event time ahead of what B holds in Kafka. A's records wait however long B's lag
    stays unknown (they left after max_wait_s before, and B's then counted late)."""
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=3)
    merge.add(A, 0, 10_000, "a")
    assert merge.release({A: False, B: None}, now=10) == []
    assert merge.release({A: False, B: None}, now=13) == []
    assert merge.release({A: False, B: None}, now=600) == []
    # B's first fetch: behind, with an older record; then caught up.
    assert merge.release({A: False, B: True}, now=601) == []
    merge.add(B, 0, 50, "b")
    assert [p for _, _, p in merge.release({A: False, B: True}, now=602)] == ["b"]
    assert [p for _, _, p in merge.release({A: False, B: False}, now=603, quiet={B})] == ["a"]


def test_records_waiting_for_an_unknown_lag_stay_within_the_bound() -> None:
    merge: EventTimeMerge[int] = EventTimeMerge(max_buffered=4, max_wait_s=3)
    for offset in range(6):
        merge.add(A, offset, offset, offset)
    out = merge.release({A: False, B: None}, now=10)
    assert [p for _, _, p in out] == [0, 1, 2, 3]
    assert len(merge) == 2


def test_a_partition_whose_lag_stays_unknown_is_reported_once_per_wait() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=3)
    merge.add(A, 0, 10, "a")
    merge.release({A: False, B: None}, now=10)
    assert merge.take_order_breaks() == ([], 0)
    merge.release({A: False, B: None}, now=13)
    assert merge.take_order_breaks() == ([B], 0)
    merge.release({A: False, B: None}, now=20)
    assert merge.take_order_breaks() == ([], 0)
    # Its lag became known, then unknown again (a rebalance): a new wait, a new report.
    merge.release({A: False, B: True}, now=21)
    merge.release({A: False, B: None}, now=22)
    merge.release({A: False, B: None}, now=25)
    assert merge.take_order_breaks() == ([B], 0)


def test_a_caught_up_partition_that_delivered_holds_the_others_until_a_fetch_answers() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=60)
    merge.add(B, 0, 100, "b100")
    merge.add(A, 0, 100, "a100")
    merge.add(A, 1, 400, "a400")
    # B is caught up as of its last answer: its next record, written since, may be older
    # than a400.
    out = merge.release({A: False, B: False}, now=10.5)
    assert sorted(p for _, _, p in out) == ["a100", "b100"]
    merge.add(B, 1, 300, "b300")
    assert [p for _, _, p in merge.release({A: False, B: False}, now=11)] == ["b300"]
    # However long no fetch of B answers (a slow pass), a400 waits for B.
    assert merge.release({A: False, B: False}, now=100) == []
    assert [p for _, _, p in merge.release({A: False, B: False}, now=100, quiet={B})] == ["a400"]


def test_a_caught_up_partition_found_empty_by_a_fetch_holds_nothing_back() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=60)
    merge.add(B, 0, 100, "b100")
    merge.add(A, 0, 100, "a100")
    merge.add(A, 1, 400, "a400")
    # No fetch of B answered since b100: B's next record may be on its way, older than a400.
    out = merge.release({A: False, B: False}, now=10.01)
    assert sorted(p for _, _, p in out) == ["a100", "b100"]
    # A fetch of B answered with nothing: what B writes next is a live arrival, later than
    # what A delivered before that answer. No need to wait out the idle wait.
    out = merge.release({A: False, B: False}, now=10.02, quiet={B})
    assert [p for _, _, p in out] == ["a400"]
    # A quiet partition that is behind again (records written since) is waited for.
    merge.add(A, 2, 500, "a500")
    assert merge.release({A: False, B: True}, now=10.03, quiet={B}) == []


def test_beyond_max_buffered_the_oldest_leave_anyway() -> None:
    merge: EventTimeMerge[int] = EventTimeMerge(max_buffered=4, max_wait_s=60)
    for offset in range(5):
        merge.add(A, offset, offset, offset)
    # B lags and has delivered nothing: without the bound all five would wait.
    assert [p for _, _, p in merge.release({A: False, B: True}, now=0)] == [0, 1, 2]
    assert merge.take_order_breaks() == ([], 3)
    assert len(merge) == 2
    assert merge.release({A: False, B: True}, now=100) == []  # no time limit for a lag


def test_a_known_lag_waits_however_long() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=3)
    merge.add(A, 0, 10, "a")
    assert merge.release({A: False, B: True}, now=0) == []
    assert merge.release({A: False, B: True}, now=60) == []
    merge.add(B, 0, 5, "b")
    out = merge.release({A: False, B: False}, now=61, quiet={A, B})
    assert [p for _, _, p in out] == ["b", "a"]
    assert merge.take_order_breaks() == ([], 0)  # in order: nothing to report


def test_rejects_keep_their_partition_order() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=5)
    merge.add(A, 0, 500, "a500")
    merge.add(A, 1, None, "reject")  # no ts: it leaves right after the record before it
    merge.add(B, 0, 100, "b100")
    merge.add(B, 1, 900, "b900")
    out = merge.release({A: False, B: False}, now=0, quiet={A, B})
    assert [p for _, _, p in out] == ["b100", "a500", "reject", "b900"]


def test_a_partition_owned_elsewhere_is_forgotten() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=5)
    merge.add(A, 0, 5, "a")
    merge.add(B, 0, 1, "b")
    merge.forget(B)
    assert len(merge) == 1
    assert merge.positions() == {A: 0}
    assert merge.sources() == [A]
    assert [p for _, _, p in merge.release({A: False}, now=0)] == ["a"]


def test_a_batch_fetched_before_a_rebalance_may_not_skip_the_records_it_dropped() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=5)
    for offset in range(3):
        merge.add(A, offset, 10 + offset, f"a{offset}")
    assert len(merge.release({A: False}, now=0)) == 3
    merge.add(A, 3, 100, "a3")
    merge.add(A, 4, 101, "a4")  # held: B is behind
    assert merge.release({A: False, B: True}, now=0) == []
    merge.rewind(A)  # a rebalance began; A stays here
    assert len(merge) == 0
    assert merge.positions() == {A: 3}
    # Offsets 5-6 were fetched before the rebalance and are handled after it.
    assert merge.admit(A, 5, 6) == 3
    # Read again from 3, aiokafka having reset A to its committed offset 2 meanwhile.
    assert merge.admit(A, 2, 6) is None
    for offset in range(2, 7):
        merge.add(A, offset, 100 + offset, f"a{offset}")
    assert [p for _, _, p in merge.release({A: False}, now=0)] == ["a3", "a4", "a5", "a6"]
    assert merge.positions() == {A: 7}
    # The rewind is over: a later jump in offsets (a transaction marker) is taken.
    assert merge.admit(A, 9, 9) is None


def test_records_read_again_after_a_rebalance_wait_by_their_own_event_time() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=5)
    merge.add(A, 0, 10, "a10")
    assert [p for _, _, p in merge.release({A: False}, now=0)] == ["a10"]
    # A fetch of A spanning hours of a backlog waits for B, behind; a rebalance that
    # keeps both drops it, and A is read again from offset 1.
    for offset, ts in enumerate((20, 30, 40_000), start=1):
        merge.add(A, offset, ts, f"a{ts}")
    assert merge.release({A: True, B: True}, now=0) == []
    merge.rewind(A)
    merge.add(A, 1, 20, "a20")
    merge.add(B, 0, 25, "b25")
    merge.add(B, 1, 35_000, "b35000")
    # A's record is no later than 20 for all its dropped ones reached 40,000: B's newer
    # records may not pass it, or stream time would pass A's next ones (counted late).
    out = merge.release({A: True, B: False}, now=1, quiet={B})
    assert [p for _, _, p in out] == ["a20"]
    merge.add(A, 2, 30, "a30")
    merge.add(A, 3, 40_000, "a40000")
    out = merge.release({A: False, B: False}, now=2, quiet={A, B})
    assert [p for _, _, p in out] == ["b25", "a30", "b35000", "a40000"]


def test_after_the_seek_back_a_jump_in_offsets_is_taken() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(max_buffered=100, max_wait_s=5)
    merge.add(A, 0, 1, "a0")
    merge.release({A: False}, now=0)
    merge.rewind(A)
    assert merge.admit(A, 3, 4) == 1
    # Offsets 1-2 hold no record (a transaction's marker, say): the same batch again.
    assert merge.admit(A, 3, 4) is None
    assert merge.admit(A, 5, 5) is None


@settings(max_examples=300, deadline=None)
@example(
    {A: [1] * 10, B: [1] * 3},
    [("fetch", 3), ("handle", 2), ("fetch", 3), ("rebalance", 1), ("handle", 1)],
)
@given(
    st.dictionaries(
        st.sampled_from([A, B]), st.lists(st.integers(1, 3), min_size=1, max_size=25), min_size=1
    ),
    st.lists(
        st.tuples(st.sampled_from(["fetch", "handle", "rebalance"]), st.integers(1, 6)), max_size=40
    ),
)
def test_every_record_is_forwarded_through_any_rebalances(
    gaps: dict[tuple[str, int], list[int]], steps: list[tuple[str, int]]
) -> None:
    """A model of the hot path: one fetch at a time, which a rebalance (every position back
    to the committed offset) may overtake before it is handled. Whatever the interleaving,
    the receiving stage, which counts a source's items once by offset (it skips an offset
    not above the highest it has seen), ends up with every record of the log."""
    # Offsets with gaps between them, as transaction markers leave.
    logs = {
        source: [sum(steps_[: i + 1]) for i in range(len(steps_))]
        for source, steps_ in gaps.items()
    }
    merge: EventTimeMerge[int] = EventTimeMerge(max_buffered=1_000, max_wait_s=1)
    position = {source: 0 for source in logs}
    committed = dict(position)
    seen: dict[tuple[str, int], list[int]] = {source: [] for source in logs}
    fetched: dict[tuple[str, int], list[int]] | None = None

    def fetch(size: int) -> dict[tuple[str, int], list[int]]:
        batches = {}
        for source, log in logs.items():
            batch = [offset for offset in log if offset >= position[source]][:size]
            if batch:
                batches[source] = batch
                position[source] = batch[-1] + 1
        return batches

    def handle(batches: dict[tuple[str, int], list[int]], behind: bool) -> None:
        for source, batch in batches.items():
            rewind_to = merge.admit(source, batch[0], batch[-1])
            if rewind_to is not None:
                position[source] = rewind_to
                continue
            for offset in batch:
                # A's event times run ahead of B's: A's records wait while B is behind.
                merge.add(source, offset, offset * 10 if source == A else offset, offset)
        # Held back while B is behind, as a backlog makes records wait.
        for source, offset, _ in merge.release({B: True} if behind else {}, now=0):
            seen[source].append(offset)
        committed.update(merge.positions())

    for step, size in steps:
        if step == "fetch" and fetched is None:
            fetched = fetch(size)
        elif step == "handle" and fetched is not None:
            handle(fetched, behind=size % 2 == 0)
            fetched = None
        elif step == "rebalance":
            for source in logs:
                merge.rewind(source)
            position.update(committed)
    if fetched is not None:
        handle(fetched, behind=False)
    for _ in range(200):
        handle(fetch(5), behind=False)
    for source, log in logs.items():
        counted, highest = [], -1
        for offset in seen[source]:
            if offset > highest:
                counted.append(offset)
                highest = offset
        assert counted == log


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([A, B, ("offers", 1)]), st.integers(0, 1000) | st.none()),
        max_size=60,
    ),
    st.lists(st.integers(1, 8), min_size=1, max_size=10),
)
def test_each_partition_leaves_in_offset_order_and_nothing_is_lost(
    records: list[tuple[tuple[str, int], int | None]], cuts: list[int]
) -> None:
    merge: EventTimeMerge[int] = EventTimeMerge(max_buffered=10_000, max_wait_s=1)
    offsets: dict[tuple[str, int], int] = {}
    released: list[tuple[tuple[str, int], int, int]] = []
    now = 0.0
    index = 0
    for cut in itertools.cycle(cuts):
        for source, ts in records[index : index + cut]:
            offsets[source] = offsets.get(source, -1) + 1
            merge.add(source, offsets[source], ts, index)
            index += 1
        now += 0.5
        done = index >= len(records)
        behind = {source: not done for source in (A, B, ("offers", 1))}
        released += merge.release(behind, now)
        if done:
            break
    released += merge.release({}, now + 10)
    assert sorted(p for _, _, p in released) == list(range(len(records)))
    for source in offsets:
        mine = [offset for s, offset, _ in released if s == source]
        assert mine == sorted(mine)
    # Released event times never go back while partitions keep up (ties aside).
    assert len(merge) == 0


def test_a_validated_batch_waits_as_its_records_one_by_one() -> None:
    """add_validated: an accepted event waits with its ts, a rejection as (record, outcome)
    keyed as the record before it; records read again after they left are skipped."""

    @dataclass(frozen=True)
    class Fetched:
        offset: int
        value: bytes

    def offer(event_id: str, ts: int) -> bytes:
        return json.dumps(
            {
                "event_id": event_id,
                "offer_id": "o",
                "customer_id": "c",
                "channel": "web",
                "segment": "smb",
                "ts": ts,
            }
        ).encode()

    records = [
        Fetched(0, offer("e0", 300)),
        Fetched(1, b"not json"),
        Fetched(2, offer("e2", 100)),
        Fetched(3, offer("e3", 700)),
    ]
    outcomes = validate_batch([r.value for r in records], True, None, 6)
    assert isinstance(outcomes[1], InvalidEvent)
    merge: EventTimeMerge[object] = EventTimeMerge(max_buffered=100, max_wait_s=5)
    merge.add_validated(A, records[:2], outcomes[:2])
    first = merge.release({A: False}, now=0, quiet={A})
    assert first == [(A, 0, outcomes[0]), (A, 1, (records[1], outcomes[1]))]
    merge.add_validated(A, records, outcomes)  # 0 and 1 read again: they left already
    merge.add(B, 0, 500, "b500")
    out = merge.release({A: False, B: False}, now=1, quiet={A, B})
    # Record 2's ts is 100, but it leaves after the records before it (key 300).
    assert [(source, offset) for source, offset, _ in out] == [(A, 2), (B, 0), (A, 3)]
    assert out[0][2] is outcomes[2]
    assert len(merge) == 0
    assert merge.positions() == {A: 4, B: 1}
    with pytest.raises(ValueError, match="outcomes"):
        merge.add_validated(B, records[:1], outcomes)
