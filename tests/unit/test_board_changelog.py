"""The compiled rates board against the Python board it replaced (board_reference.py).

Both take the same partials messages (re-sent, stale and out-of-order ones among them)
and must publish the same records, read the same, and write the same store entries, key
for key and value for value, so that a board changelog written by either restores in the
other: every restart here restores each board from the *other* one's changelog.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app import _engine
from stream_app.domain.board import RatesBoard, encode_partials
from stream_app.domain.cohorts import Partial
from stream_app.domain.views import VIEWS
from stream_app.domain.window_config import WindowConfig
from tests.unit.board_reference import ReferenceBoard
from tests.unit.conftest import MINUTE, SIZES, T0, merge_store

BOARD = WindowConfig(sizes=SIZES, attribution_ms=10 * MINUTE, grace_ms=MINUTE)
PARTITIONS = 3
FIGURES = 4  # figures per vector: the board sums whatever it is sent
# Non-ASCII and escaped characters in the texts the entries hold.
CHANNELS = ("email", "sms", "é-mail", 'quo"te')
SEGMENTS = ("smb", "enterprise", "__all__")


@dataclass(frozen=True)
class Send:
    partition: int
    # Minutes past T0 of the partition's stream time after the message (None: unknown).
    minute: int | None
    partials: list[Partial]
    # Where the message goes: the next offset, an old offset (ignored), or a repeat of an
    # earlier message at the next offset (a partition's restart sending it again).
    kind: str = "next"


@dataclass(frozen=True)
class TakeRecords:
    pass


@dataclass(frozen=True)
class Restart:
    pass


Step = Send | TakeRecords | Restart

figure = st.one_of(st.integers(0, 50), st.integers(2**63, 2**70))
partial = st.builds(
    lambda view, size, window, channel, segment, vector: Partial(
        view.name, size[0], T0 + window * size[1], (channel, segment), vector
    ),
    st.sampled_from(VIEWS),
    st.sampled_from(SIZES),
    st.integers(0, 8),
    st.sampled_from(CHANNELS),
    st.sampled_from(SEGMENTS),
    st.lists(figure, min_size=FIGURES, max_size=FIGURES),
)
steps = st.lists(
    st.one_of(
        st.builds(
            Send,
            st.integers(0, PARTITIONS - 1),
            st.one_of(st.none(), st.integers(0, 60)),
            st.lists(partial, max_size=8),
            st.sampled_from(("next", "next", "next", "old", "again")),
        ),
        st.just(TakeRecords()),
        st.just(Restart()),
    ),
    max_size=40,
)


def decoded(packed: list[tuple[str, bytes | None]]) -> dict[str, Any]:
    """Store entries as a store reads them back; a window's changed keys (a set in the
    Python board, written in its arbitrary order) sorted."""
    entries: dict[str, Any] = {}
    for key, raw in packed:
        value = None if raw is None else _engine.unpack(raw)
        if key.startswith("w|") and value is not None:
            value[2] = sorted(value[2])
        entries[key] = value
    return entries


class Pair:
    """The compiled board and the reference, fed alike, each with its own changelog."""

    def __init__(self) -> None:
        self.compiled = RatesBoard(BOARD, PARTITIONS)
        self.reference = ReferenceBoard(BOARD, PARTITIONS)
        self.compiled_store: dict[str, Any] = {}
        self.reference_store: dict[str, Any] = {}
        self.sent: list[bytes] = []
        self.offset = 0

    def send(self, step: Send) -> None:
        if step.kind == "again" and self.sent:
            message = self.sent[len(self.sent) // 2]
        else:
            stream_time = None if step.minute is None else T0 + step.minute * MINUTE
            message = encode_partials(step.partition, stream_time, step.partials)
            self.sent.append(message)
        offset = max(0, self.offset - 2) if step.kind == "old" else self.offset
        self.offset = max(self.offset, offset + 1)
        self.compiled.apply_encoded(message, offset)
        self.reference.apply_encoded(message, offset)

    def persist(self) -> None:
        """Both boards' changes: the same entries, encoded alike."""
        compiled = self.compiled.take_packed_changes()
        reference = _engine.pack_entries(self.reference.take_changes())
        assert decoded(compiled) == decoded(reference)
        exact = {key: raw for key, raw in reference if raw is None or _single_change(raw)}
        assert {key: raw for key, raw in compiled if key in exact} == exact
        merge_store(self.compiled_store, decoded(compiled))
        merge_store(self.reference_store, decoded(reference))

    def restart(self) -> None:
        """Each board restored from the other's changelog."""
        self.compiled, self.reference = (
            RatesBoard.restore(BOARD, PARTITIONS, copy.deepcopy(self.reference_store)),
            ReferenceBoard.restore(BOARD, PARTITIONS, copy.deepcopy(self.compiled_store)),
        )

    def assert_same_reads(self) -> None:
        compiled, reference = self.compiled, self.reference
        assert compiled.next_offset == reference.next_offset
        assert compiled.stream_time == reference.stream_time
        assert compiled.low_watermark == reference.low_watermark
        for view in VIEWS:
            for label, size in SIZES:
                assert compiled.current(view, label) == reference.current(view, label)
                starts = compiled.retained(view, label)
                assert starts == reference.retained(view, label)
                for start in [*starts, T0 + 9 * size]:
                    window = (label, start)
                    assert compiled.window(view, window) == reference.window(view, window)


def _single_change(raw: bytes) -> bool:
    """A value whose bytes do not depend on a set's order (one changed key at most)."""
    value = _engine.unpack(raw)
    return not isinstance(value, list) or len(value) != 3 or len(value[2]) <= 1


@settings(max_examples=150, deadline=None)
@given(steps)
def test_the_compiled_board_publishes_and_stores_what_the_python_board_did(
    plan: list[Step],
) -> None:
    pair = Pair()
    for step in plan:
        if isinstance(step, Send):
            pair.send(step)
        elif isinstance(step, TakeRecords):
            assert pair.compiled.take_records() == pair.reference.take_records()
        else:
            pair.persist()
            pair.restart()
        pair.assert_same_reads()
    # Every partition far past every window: whatever is left is published final.
    for partition in range(PARTITIONS):
        pair.send(Send(partition, 24 * 60, []))
    assert pair.compiled.take_records() == pair.reference.take_records()
    pair.persist()
    pair.assert_same_reads()


def test_a_changelog_holds_windows_keys_partitions_and_the_meta_entry() -> None:
    """The entries themselves, built here from what was sent (not from either board)."""
    board = RatesBoard(BOARD, 2)
    vector = [3, 1, 2**64, 0]
    board.apply(1, T0 + MINUTE, [Partial("channel_segment", "5m", T0, ("é", "smb"), vector)], 0)
    board.apply(0, T0, [Partial("channel_segment", "5m", T0, ("é", "smb"), [1, 0, 0, 0])], 1)
    assert board.take_changes() == {
        f'w|["channel_segment","5m",{T0}]': [
            False,
            [["é", "smb", 1, vector], ["é", "smb", 0, [1, 0, 0, 0]]],
            [["é", "smb"]],
        ],
        "m": [2, [[1, T0 + MINUTE], [0, T0]]],
    }
    assert board.take_changes() == {"m": [2, [[1, T0 + MINUTE], [0, T0]]]}


def test_a_malformed_message_is_refused_with_its_offset_and_changes_nothing() -> None:
    board = RatesBoard(BOARD, 2)
    with pytest.raises(
        ValueError,
        match=r"partials message at offset 5: a row needs a view, label, start and key at line 1",
    ):
        board.apply_encoded(b'[0, 1, [["channel_segment", "5m"]]]', 5)
    assert (board.next_offset, board.stream_time, board.take_records()) == (0, None, [])
