"""The gap guard of the internal partitions (domain/gaps.py): a fetch that begins past the
first record a state has not applied is read again from there, once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream_app.domain.gaps import GapGuard, Skipped

EVENTS_0 = ("upsell-stream-events-by-customer", 0)
EVENTS_1 = ("upsell-stream-events-by-customer", 1)


def test_a_fetch_from_the_next_offset_or_before_it_is_applied() -> None:
    guard = GapGuard()
    assert guard.check(EVENTS_0, 16, 16) is None
    # Records before the next offset were applied already; the state skips them.
    assert guard.check(EVENTS_0, 3, 16) is None


def test_a_fetch_past_the_next_offset_is_read_again_from_it() -> None:
    guard = GapGuard()
    assert guard.check(EVENTS_0, 3859, 3843) == Skipped(EVENTS_0, 3859, 3843, gone=False)
    # Read again from 3843: applied, and the guard forgets the seek.
    assert guard.check(EVENTS_0, 3843, 3843) is None
    assert guard.check(EVENTS_0, 3900, 3870) == Skipped(EVENTS_0, 3900, 3870, gone=False)


def test_records_still_missing_after_the_seek_back_are_gone() -> None:
    guard = GapGuard()
    assert not guard.check(EVENTS_0, 500, 0).gone  # type: ignore[union-attr]
    # Retention deleted offsets 0 to 499: reading again from 0 begins at 500 once more.
    skipped = guard.check(EVENTS_0, 500, 0)
    assert skipped == Skipped(EVENTS_0, 500, 0, gone=True)
    assert "500 records from offset 0 on are gone" in skipped.message()
    # Taken: a later gap is read again first, as any other.
    assert guard.check(EVENTS_0, 900, 800) == Skipped(EVENTS_0, 900, 800, gone=False)


def test_partitions_are_guarded_apart_and_a_rebalance_forgets_the_seeks() -> None:
    guard = GapGuard()
    assert not guard.check(EVENTS_0, 20, 10).gone  # type: ignore[union-attr]
    assert not guard.check(EVENTS_1, 20, 10).gone  # type: ignore[union-attr]
    guard.clear()
    # After the rebalance, the same gap is read again, not taken as gone.
    assert not guard.check(EVENTS_0, 20, 10).gone  # type: ignore[union-attr]


@given(st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=40))
def test_no_record_is_skipped_unless_it_was_sought_back_first(firsts: list[int]) -> None:
    """Applying fetches as the guard says never moves the next offset past a record that
    was not applied, except after a seek back to exactly that offset (records gone)."""
    guard = GapGuard()
    next_offset = 0
    sought: int | None = None
    for first in firsts:
        skipped = guard.check(EVENTS_0, first, next_offset)
        if skipped is None:
            assert first <= next_offset
        elif skipped.gone:
            assert sought == next_offset
        else:
            sought = next_offset
            continue
        next_offset = max(next_offset, first + 1)
        sought = None
