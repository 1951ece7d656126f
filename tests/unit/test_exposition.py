"""The /metrics writer: byte for byte what prometheus_client's generate_latest writes, on
the first render and on every later one, whatever families, labels and values it is given."""

from __future__ import annotations

import math
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from stream_app.serving.exposition import ExpositionWriter

_NAMES = st.from_regex(r"[a-z_:][a-z0-9_:]{0,8}", fullmatch=True)
# Also names only UTF-8 escaping allows: generate_latest escapes them, the writer hands
# those families to it.
_ODD_NAMES = st.sampled_from(["odd.name", "label-with-dash", "ünï"])
_LABEL_NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda name: not name.startswith("__")
)
_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([0, 0.0, -0.0, 1e21, 123456789.0, 1e-7, math.inf, -math.inf]),
)
_TEXT = st.text(
    alphabet=st.sampled_from(["a", "Z", " ", "\\", '"', "\n", "é", "💡", "{", "="]), max_size=8
)


@st.composite
def families(draw: st.DrawFn) -> list[Metric]:
    made: list[Metric] = []
    for index in range(draw(st.integers(min_value=0, max_value=5))):
        name = f"{draw(_NAMES)}_{index}"
        kind = draw(st.sampled_from(["counter", "gauge", "gauge", "histogram", "info", "odd"]))
        labels = draw(st.lists(_LABEL_NAMES, max_size=3, unique=True))
        documentation = draw(_TEXT)
        rows = draw(
            st.lists(
                st.tuples(st.lists(_TEXT, min_size=len(labels), max_size=len(labels)), _VALUES),
                max_size=6,
                unique_by=lambda row: tuple(row[0]),
            )
        )
        if kind == "counter":
            counter = CounterMetricFamily(name, documentation, labels=labels)
            created = draw(st.booleans())
            for values, value in rows:
                counter.add_metric(
                    values,
                    abs(value) if not math.isnan(value) else value,
                    created=1.7e9 if created else None,
                )
            made.append(counter)
        elif kind == "gauge":
            gauge = GaugeMetricFamily(name, documentation, labels=labels)
            stamped = draw(st.booleans()) and draw(st.booleans())
            for values, value in rows:
                gauge.add_metric(values, value, timestamp=1.7e9 if stamped else None)
            made.append(gauge)
        elif kind == "histogram":
            histogram = HistogramMetricFamily(name, documentation, labels=labels)
            for values, _ in rows:
                histogram.add_metric(values, [("1.0", 1), ("+Inf", 2)], 3.5)
            made.append(histogram)
        elif kind == "info":
            made.append(InfoMetricFamily(name, documentation, value={"version": "1"}))
        else:
            odd = GaugeMetricFamily(
                draw(_ODD_NAMES) + str(index), documentation, labels=["odd.label"]
            )
            odd.add_metric(["x"], 1.0)
            made.append(odd)
    return made


class Families(Collector):
    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _registry() -> tuple[CollectorRegistry, Families]:
    registry = CollectorRegistry(auto_describe=False)
    collector = Families()
    registry.register(collector)
    return registry, collector


@settings(max_examples=300, deadline=None)
@given(st.lists(families(), min_size=1, max_size=4))
def test_every_render_is_what_generate_latest_writes(renders: list[list[Metric]]) -> None:
    # Several renders in a row through one writer: what it keeps from one render (series
    # gone, values changed, new ones) never shows in the next.
    registry, collector = _registry()
    writer = ExpositionWriter(registry)
    for made in renders:
        collector.families = made
        assert writer.render() == generate_latest(registry)


def test_a_series_keeps_its_labels_while_its_value_changes() -> None:
    registry, collector = _registry()
    writer = ExpositionWriter(registry)
    for value in (1, 2.5, math.inf):
        gauge = GaugeMetricFamily("upsell_rate", "A rate.", labels=["channel", "segment"])
        gauge.add_metric(['e"mail', "a\\b\nc"], value)
        collector.families = [gauge]
        text = writer.render()
        assert text == generate_latest(registry)
    assert text.splitlines()[-1] == b'upsell_rate{channel="e\\"mail",segment="a\\\\b\\nc"} +Inf'
