"""The rates and KPI topics' records, built in the compiled core (engine/src/records.rs).

Contract: "Output topics". Each record's key and value must be the bytes the Python
record makes: `WindowRecord.topic_key` and `fastjson.dumps` (orjson) of
`WindowRecord.as_json`, whose figures are rates.py's. Any text, any figure (beyond 2^53
and 64 bits too), any window start and emitted_at.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream_app.domain.bands import DEFAULT_BANDS, Bands
from stream_app.domain.board import RatesBoard, WindowRecord, encode_partials
from stream_app.domain.cohorts import Partial
from stream_app.domain.fastjson import dumps
from stream_app.domain.views import CHANNEL_SEGMENT, PURCHASES, VIEWS, View
from tests.unit.conftest import CONFIG, DAY, T0

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
# Built in the compiled core up to 2^52, left to the Python record beyond (records.rs).
exact_figures = st.one_of(st.integers(0, 20), st.integers(0, 2**52), st.integers(-(2**52), 0))
any_figures = st.one_of(exact_figures, st.integers(-(2**70), 2**70))
# Years of 4 digits, below 1000 (padded), and beyond 0-9999 (ISO 8601's expanded years).
starts = st.one_of(
    st.integers(T0 - 30 * DAY, T0 + 30 * DAY),
    st.integers(-63_000_000_000_000, -30_000_000_000_000),
    st.integers(-(2**55), 2**55),
)
bands = st.builds(
    Bands.of,
    st.lists(st.floats(0, 1), min_size=3, max_size=3, unique=True).map(lambda b: tuple(sorted(b))),
    st.lists(st.floats(0, 1), min_size=2, max_size=2, unique=True).map(lambda b: tuple(sorted(b))),
)


@st.composite
def partials(draw: st.DrawFn) -> Partial:
    view: View = draw(st.sampled_from(VIEWS))
    first = draw(st.one_of(texts, st.sampled_from(["member", "non_member"])))
    figures = draw(st.sampled_from([exact_figures, exact_figures, any_figures]))
    vector = draw(st.lists(figures, min_size=len(view.fields), max_size=len(view.fields)))
    label = draw(st.sampled_from([label for label, _ in CONFIG.sizes]))
    return Partial(view.name, label, draw(starts), (first, draw(texts)), vector)


def board_of(rows: list[Partial], stream_time: int) -> RatesBoard:
    board = RatesBoard(CONFIG, 1)
    board.apply_encoded(encode_partials(0, stream_time, rows), 0)
    return board


def expected(record: WindowRecord, scales: Bands, emitted_at_ms: int) -> tuple[View, bytes, bytes]:
    return (record.view, record.topic_key.encode(), dumps(record.as_json(scales, emitted_at_ms)))


@settings(max_examples=400)
@given(
    st.lists(partials(), min_size=1, max_size=6),
    st.integers(0, 10 * DAY),
    bands,
    starts,
)
@example(
    [Partial(PURCHASES.name, "5m", T0, ("member", "a|b%c\n\x1f\x7fé"), [3, 1, 7, 5, 2, 1])],
    DAY,
    DEFAULT_BANDS,
    T0,
)
# Beyond 2^53 a float rounds the integer before dividing, Python's int division does not.
@example(
    [Partial(CHANNEL_SEGMENT.name, "1h", T0, ("web", "smb"), [3, 1, 2**53 + 1, 1, 1])],
    0,
    DEFAULT_BANDS,
    T0,
)
@example(
    [Partial(CHANNEL_SEGMENT.name, "1h", T0, ("web", "smb"), [3, 2**53 + 1, 1, 1, 1])],
    0,
    DEFAULT_BANDS,
    T0,
)
def test_published_records_are_the_python_records_bytes(
    rows: list[Partial], after: int, scales: Bands, emitted_at_ms: int
) -> None:
    # Past every row's window: all are published (final or not, as `after` falls).
    stream_time = max(row.start for row in rows) + 2 * DAY + after
    records = board_of(rows, stream_time).take_records()
    published = board_of(rows, stream_time).take_published(scales, emitted_at_ms)
    assert records
    assert published == [expected(record, scales, emitted_at_ms) for record in records]
