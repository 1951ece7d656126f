"""The /metrics cache: the text is rendered again when the pipeline changed, but rendering
never takes more than a share of the event loop however often it is scraped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from stream_app.serving.web import ExpositionCache


class FakeReadModel:
    version = 0


class CountingCollector(Collector):
    """Exports how many times it was collected; rendering it takes `cost` seconds of the
    fake clock."""

    def __init__(self, clock: list[float], cost: float) -> None:
        self.clock, self.cost, self.renders = clock, cost, 0

    def collect(self) -> Iterator[Metric]:
        self.renders += 1
        self.clock[0] += self.cost
        family = CounterMetricFamily("renders", "Renders.")
        family.add_metric([], self.renders)
        yield family


def cache(cost: float) -> tuple[ExpositionCache, FakeReadModel, CountingCollector, list[float]]:
    clock = [100.0]
    collector = CountingCollector(clock, cost)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    pipeline = FakeReadModel()
    exposition = ExpositionCache(cast(Any, pipeline), registry, clock=lambda: clock[0])
    return exposition, pipeline, collector, clock


def test_the_text_is_served_again_until_the_pipeline_changes() -> None:
    exposition, pipeline, _, clock = cache(0.0)
    first = exposition.render()
    assert b"renders_total 1.0" in first
    clock[0] += 0.01
    assert exposition.render() == first
    pipeline.version += 1
    clock[0] += 0.01
    assert b"renders_total 2.0" in exposition.render()
    # Never older than MAX_AGE_S, changed or not.
    clock[0] += ExpositionCache.MAX_AGE_S
    assert b"renders_total 3.0" in exposition.render()


def test_rendering_takes_at_most_a_share_of_the_loop_however_often_it_is_scraped() -> None:
    exposition, pipeline, collector, clock = cache(0.05)
    scraped_at = clock[0]
    served = []
    while clock[0] < scraped_at + 10:
        pipeline.version += 1  # a change before every scrape
        served.append(exposition.render())
        clock[0] += 0.01
    # 10 s of scrapes every 10 ms, each render 50 ms: without the spacing they would all
    # render, back to back.
    share = collector.renders * 0.05 / (clock[0] - scraped_at)
    assert share <= 1 / ExpositionCache.RENDER_SPACING + 0.01
    assert collector.renders >= 10 / (ExpositionCache.RENDER_SPACING * 0.05 + 0.05) - 1
    # A change is shown at most RENDER_SPACING renders' time after it.
    pipeline.version += 1
    changed_at = clock[0]
    while b"renders_total %d.0" % (collector.renders + 1) not in exposition.render():
        clock[0] += 0.01
    assert clock[0] - changed_at <= ExpositionCache.RENDER_SPACING * 0.05 + 0.01


def test_a_scrape_long_enough_after_a_change_shows_it_however_slow_rendering_is() -> None:
    exposition, pipeline, collector, clock = cache(0.2)  # 4 x 0.2 s would be 0.8 s
    start = clock[0]
    exposition.render()
    delay = ExpositionCache.MAX_DELAY_S
    for n in range(2, 5):
        pipeline.version += 1
        changed_at = clock[0] = start + (n - 2) * delay + 0.001
        served = exposition.render()  # spaced: the text before the change
        assert b"renders_total %d.0" % (n - 1) in served
        clock[0] = changed_at + delay
        assert b"renders_total %d.0" % n in exposition.render()
    assert collector.renders == 4
