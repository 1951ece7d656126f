"""Prometheus metrics built at scrape time from the state of the partitions this worker owns.

Counters come from the durable totals, so they survive restarts; a worker that loses a
partition stops exporting its share at once. Window gauges come from the rates board,
which one worker of the group owns. Summed over the workers of one group, every counter
and gauge equals what one worker alone would export.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from stream_app.domain import totals as totals_of
from stream_app.domain.bands import Bands
from stream_app.domain.events import MICROS_PER_UNIT
from stream_app.domain.rates import figures
from stream_app.domain.views import ALL, CAMPAIGN, CHANNEL_SEGMENT, PURCHASES, Key, View
from stream_app.serving.read_model import ReadModel

_WINDOW_HELP = " The window label must always be selected, never summed over."


@dataclass(frozen=True)
class _CounterSpec:
    name: str
    help: str
    total: str
    labels: tuple[str, ...]
    scale: float = 1.0
    # Label positions that get `__all__` roll-ups (the two dimensions of a view).
    rolled: tuple[int, ...] = (0, 1)


_COUNTERS = (
    _CounterSpec(
        "upsell_offers_presented",
        "Upsell offers presented (valid, not duplicate).",
        totals_of.OFFERS_TOTAL,
        ("channel", "segment"),
    ),
    _CounterSpec(
        "upsell_conversions",
        "Offers converted, by the offer's channel and segment.",
        totals_of.CONVERSIONS_TOTAL,
        ("channel", "segment"),
    ),
    _CounterSpec(
        "upsell_revenue",
        "Sum of converting purchases' amounts.",
        totals_of.REVENUE_TOTAL,
        ("channel", "segment"),
        1 / MICROS_PER_UNIT,
    ),
    _CounterSpec(
        "upsell_campaign_offers_presented",
        "Offers presented, by campaign type and product line.",
        totals_of.CAMPAIGN_OFFERS_TOTAL,
        ("campaign_type", "product_line"),
    ),
    _CounterSpec(
        "upsell_campaign_conversions",
        "Offers converted, by the offer's campaign type and product line.",
        totals_of.CAMPAIGN_CONVERSIONS_TOTAL,
        ("campaign_type", "product_line"),
    ),
    _CounterSpec(
        "upsell_campaign_revenue",
        "Converting purchases' amounts, by the offer's campaign type and product line.",
        totals_of.CAMPAIGN_REVENUE_TOTAL,
        ("campaign_type", "product_line"),
        1 / MICROS_PER_UNIT,
    ),
    _CounterSpec(
        "upsell_purchases",
        "Purchases, by kind (upsell or other), loyalty and the purchase's product line.",
        totals_of.PURCHASES_TOTAL,
        ("kind", "loyalty", "product_line"),
        rolled=(1, 2),
    ),
    _CounterSpec(
        "upsell_purchase_amount",
        "Purchase amounts, by kind, loyalty and product line.",
        totals_of.PURCHASE_AMOUNT_TOTAL,
        ("kind", "loyalty", "product_line"),
        1 / MICROS_PER_UNIT,
        rolled=(1, 2),
    ),
    _CounterSpec(
        "upsell_events_rejected",
        "Messages rejected and copied to the dead-letter topic.",
        totals_of.REJECTED_TOTAL,
        ("topic", "reason"),
        rolled=(),
    ),
    _CounterSpec(
        "upsell_events_late",
        "Events whose window of some size had closed.",
        totals_of.LATE_TOTAL,
        ("topic",),
        rolled=(),
    ),
    _CounterSpec(
        "upsell_events_duplicate",
        "Events whose event_id was already processed.",
        totals_of.DUPLICATES_TOTAL,
        ("topic",),
        rolled=(),
    ),
    _CounterSpec(
        "upsell_label_overflow",
        "Events with a value of this dimension counted under "
        "__other__: beyond UPSELL_MAX_LABEL_VALUES values, too long, or reserved.",
        totals_of.LABEL_OVERFLOW_TOTAL,
        ("dimension",),
        rolled=(),
    ),
)

# Gauges of the current window: (metric, help, view, figure, fixed labels).
_GAUGES: tuple[tuple[str, str, View, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "upsell_window_offers",
        "Offers presented in the current window.",
        CHANNEL_SEGMENT,
        "offers",
        (),
    ),
    (
        "upsell_window_conversions",
        "Conversions of the offers of the current window.",
        CHANNEL_SEGMENT,
        "conversions",
        (),
    ),
    (
        "upsell_rate",
        "Window conversions / window offers, absent while the window has no offers.",
        CHANNEL_SEGMENT,
        "rate",
        (),
    ),
    (
        "upsell_window_customers_targeted",
        "Distinct customers offered an upsell in the current window.",
        CHANNEL_SEGMENT,
        "customers_targeted",
        (),
    ),
    (
        "upsell_window_customers_upsold",
        "Distinct customers of the current window with a converted offer.",
        CHANNEL_SEGMENT,
        "customers_upsold",
        (),
    ),
    (
        "upsell_customer_rate",
        "Customers upsold / customers targeted (campaign upsell rate).",
        CHANNEL_SEGMENT,
        "customer_rate",
        (),
    ),
    (
        "upsell_campaign_window_offers",
        "Offers of the current window by campaign type and product line.",
        CAMPAIGN,
        "offers",
        (),
    ),
    (
        "upsell_campaign_window_conversions",
        "Conversions of those offers.",
        CAMPAIGN,
        "conversions",
        (),
    ),
    ("upsell_campaign_rate", "Campaign window conversions / offers.", CAMPAIGN, "rate", ()),
    (
        "upsell_window_purchases",
        "Purchases of the current window by kind.",
        PURCHASES,
        "upsell_purchases",
        (("kind", "upsell"),),
    ),
    ("upsell_window_purchases", "", PURCHASES, "other_purchases", (("kind", "other"),)),
    (
        "upsell_window_purchase_amount",
        "Purchase amounts of the current window by kind.",
        PURCHASES,
        "upsell_amount",
        (("kind", "upsell"),),
    ),
    ("upsell_window_purchase_amount", "", PURCHASES, "other_amount", (("kind", "other"),)),
    (
        "upsell_transaction_rate",
        "Upsell transactions / all transactions.",
        PURCHASES,
        "transaction_rate",
        (),
    ),
    (
        "upsell_revenue_share",
        "Upsell transactions' amount / all transactions' amount.",
        PURCHASES,
        "revenue_share",
        (),
    ),
    (
        "upsell_aov_uplift",
        "Mean upsell transaction amount minus mean other transaction "
        "amount, absent while either side has none.",
        PURCHASES,
        "aov_uplift",
        (),
    ),
    (
        "upsell_window_buyers",
        "Distinct buyers of the current window: any, or with an upsell.",
        PURCHASES,
        "buyers",
        (("kind", "any"),),
    ),
    ("upsell_window_buyers", "", PURCHASES, "upsell_buyers", (("kind", "upsell"),)),
    (
        "upsell_buyer_rate",
        "Buyers with an upsell transaction / all buyers.",
        PURCHASES,
        "buyer_rate",
        (),
    ),
)


def rolled_up(
    counter: Counter[tuple[str, ...]], positions: tuple[int, ...]
) -> Counter[tuple[str, ...]]:
    """Add the `__all__` roll-ups over the label positions given (each combination)."""
    summed: Counter[tuple[str, ...]] = Counter()
    for key, value in counter.items():
        variants = [key]
        for position in positions:
            variants += [(*v[:position], ALL, *v[position + 1 :]) for v in variants]
        for variant in variants:
            summed[variant] += value
    return summed


class PipelineCollector(Collector):
    def __init__(self, model: ReadModel) -> None:
        self._model = model

    def collect(self) -> Iterator[Metric]:
        totals = self._model.totals()
        for spec in _COUNTERS:
            family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            for key, value in rolled_up(totals[spec.total], spec.rolled).items():
                family.add_metric(list(key), value * spec.scale)
            yield family
        yield from self._window_gauges()
        # With the window gauges, from the one worker that holds the board, so that a
        # sum over the workers of a group is still the configured bound.
        if self._model.boards():
            yield self._band_bounds(self._model.bands)
        yield from self._drop_alerts()
        yield from self._progress()

    def _progress(self) -> Iterator[Metric]:
        # Process-local, unlike the counters above: they show this worker's own progress.
        processed = CounterMetricFamily(
            "upsell_events_processed",
            "Input messages this worker has read and validated "
            "(valid or rejected), since it started.",
            labels=["topic"],
        )
        for topic in self._model.input_topics:
            processed.add_metric([topic], self._model.events_in_of(topic))
        yield processed
        lag = GaugeMetricFamily(
            "upsell_consumer_lag",
            "Messages not yet read on each partition this worker owns "
            "(input and internal topics), as of the partition's last batch.",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in self._model.lag():
            lag.add_metric([topic, str(partition)], behind)
        yield lag

    def _drop_alerts(self) -> Iterator[Metric]:
        # From the worker that holds the board, like the window gauges.
        active = GaugeMetricFamily(
            "upsell_rate_drop_active",
            "1 while the in-stream detector holds a rate-drop alert "
            "for the channel, segment and window size, else 0." + _WINDOW_HELP,
            labels=["channel", "segment", "window"],
        )
        alerts = CounterMetricFamily(
            "upsell_alerts",
            "Rate-drop alerts of the in-stream detector, by state (fired or "
            "resolved)." + _WINDOW_HELP,
            labels=["channel", "segment", "window", "state"],
        )
        for detector in self._model.detectors():
            for label, key, firing in detector.active():
                active.add_metric([*key, label], 1.0 if firing else 0.0)
            for label, key, state, count in detector.alert_counts():
                alerts.add_metric([*key, label, state], count)
        yield active
        yield alerts

    def _window_gauges(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        sizes = self._model.window_labels
        boards = self._model.boards()
        # Every gauge of a view reads the same window: summing its partitions' vectors and
        # working out the figures once per view, not once per gauge (19 gauges, 3 views),
        # is most of a /metrics render's work, done on the event loop of the hot path.
        current: dict[tuple[int, str, str], list[tuple[Key, dict[str, Any]]]] = {}
        for name, help_text, view, figure, fixed in _GAUGES:
            labels = [label for label, _ in fixed] + [*view.dimensions, "window"]
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(
                    name, help_text + _WINDOW_HELP, labels=labels
                )
            fixed_values = [value for _, value in fixed]
            for index, board in enumerate(boards):
                for label in sizes:
                    rows = current.get((index, view.name, label))
                    if rows is None:
                        rows = current[(index, view.name, label)] = [
                            (key, figures(view, key, vector, self._model.bands))
                            for key, vector in board.current(view, label).items()
                        ]
                    for key, named in rows:
                        value = named[figure]
                        if value is not None:
                            family.add_metric([*fixed_values, *key, label], value)
        yield from families.values()

    @staticmethod
    def _band_bounds(bands: Bands) -> Metric:
        family = GaugeMetricFamily(
            "upsell_band_lower_bound",
            "Lower bound of each benchmark band of a rate scale.",
            labels=["scale", "band"],
        )
        for scale in (bands.campaign, bands.loyalty):
            for band, bound in scale.lower_bounds().items():
                family.add_metric([scale.scale, band], bound)
        return family


def build_registry(model: ReadModel) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(model))
    return registry
