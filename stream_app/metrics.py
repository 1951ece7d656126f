"""Prometheus metrics built at scrape time from the state of the partitions this worker owns.

Counters come from the durable totals, so they survive restarts; a worker that loses a
partition stops exporting its share at once. Summed over the workers of one group, every
counter and window gauge equals what one worker alone would export.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from stream_app.core.cohorts import Pair
from stream_app.core.events import MICROS_PER_UNIT
from stream_app.core.partition import Totals
from stream_app.core.rates import ratio, rollup_keys
from stream_app.pipeline import Pipeline

_PAIR = ["channel", "segment"]
_WINDOW_HELP = " The window label must always be selected, never summed over."


def _with_rollups(counter: Counter[Pair]) -> Counter[Pair]:
    summed: Counter[Pair] = Counter()
    for pair, value in counter.items():
        for key in rollup_keys(pair):
            summed[key] += value
    return summed


class PipelineCollector(Collector):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        totals = self._owned_totals()
        yield from self._counters(totals)
        yield from self._window_gauges()

    def _owned_totals(self) -> Totals:
        summed = Totals()
        for state in list(self._pipeline.partitions.values()):
            part = state.totals
            summed.offers.update(part.offers)
            summed.conversions.update(part.conversions)
            summed.revenue_micros.update(part.revenue_micros)
            summed.rejected.update(part.rejected)
            summed.late.update(part.late)
            summed.duplicates.update(part.duplicates)
        return summed

    def _counters(self, totals: Totals) -> Iterable[Metric]:
        offers = CounterMetricFamily(
            "upsell_offers_presented", "Upsell offers presented (valid, not duplicate).",
            labels=_PAIR)
        conversions = CounterMetricFamily(
            "upsell_conversions", "Offers converted, by the offer's channel and segment.",
            labels=_PAIR)
        revenue = CounterMetricFamily(
            "upsell_revenue", "Sum of converting purchases' amounts.", labels=_PAIR)
        for pair, value in _with_rollups(totals.offers).items():
            offers.add_metric(list(pair), value)
        for pair, value in _with_rollups(totals.conversions).items():
            conversions.add_metric(list(pair), value)
        for pair, value in _with_rollups(totals.revenue_micros).items():
            revenue.add_metric(list(pair), value / MICROS_PER_UNIT)
        rejected = CounterMetricFamily(
            "upsell_events_rejected", "Messages rejected and copied to the dead-letter topic.",
            labels=["topic", "reason"])
        for (topic, reason), value in totals.rejected.items():
            rejected.add_metric([topic, reason], value)
        late = CounterMetricFamily(
            "upsell_events_late", "Events whose window of some size had closed.",
            labels=["topic"])
        for topic, value in totals.late.items():
            late.add_metric([topic], value)
        duplicates = CounterMetricFamily(
            "upsell_events_duplicate", "Events whose event_id was already processed.",
            labels=["topic"])
        for topic, value in totals.duplicates.items():
            duplicates.add_metric([topic], value)
        return [offers, conversions, revenue, rejected, late, duplicates]

    def _window_gauges(self) -> Iterable[Metric]:
        labels = [*_PAIR, "window"]
        offers = GaugeMetricFamily(
            "upsell_window_offers", "Offers presented in the current window." + _WINDOW_HELP,
            labels=labels)
        conversions = GaugeMetricFamily(
            "upsell_window_conversions",
            "Conversions of the offers of the current window." + _WINDOW_HELP, labels=labels)
        rate = GaugeMetricFamily(
            "upsell_rate",
            "Window conversions / window offers, absent while the window has no offers."
            + _WINDOW_HELP, labels=labels)
        for board in list(self._pipeline.boards.values()):
            for size in self._pipeline.settings.windows:
                for pair, counts in board.current(size.label).items():
                    key = [*pair, size.label]
                    offers.add_metric(key, counts.offers)
                    conversions.add_metric(key, counts.conversions)
                    value = ratio(counts.conversions, counts.offers)
                    if value is not None:
                        rate.add_metric(key, value)
        return [offers, conversions, rate]


def build_registry(pipeline: Pipeline) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(pipeline))
    return registry
