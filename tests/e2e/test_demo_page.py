"""The demo's story on the live page in chromium: before, during and after a rate drop.

A short, fast simulation in three phases (normal, one channel's rate cut to a tenth,
normal again), each run to its end and fully processed before the page is read, so that
what the page must show at each step is known from the data alone: no alert before, an
alert for the dropped channel during, none after (the rate recovered). The alert panel,
/api/rates, /metrics and the alerts topic must agree at each step. The charts (uPlot) are
read too: the time axis in event time, a hovered value against /api/rates, the bands and
the filling window. With UPSELL_SCREENSHOTS=docs/screenshots the three states are saved
there as PNG files (how docs/screenshots/ was made).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from stream_app.domain.demo_source import DemoSource, InjectedDrop, RateChange
from stream_app.domain.events import parse_ts
from stream_app.domain.windows import rfc3339
from stream_app.tools.simulator.scenario import (
    SEGMENTS,
    ScenarioConfig,
    expected_messages_per_offer,
    true_rate,
)
from tests.e2e.harness import CLI, Deployment, deployment, wait_until
from tests.e2e.test_drop_alerting import in_stream_alerts
from tests.e2e.test_live_page import api as rates_document
from tests.e2e.test_live_page import browser, csp_reports

DROPPED = "in_app"
FACTOR = 0.1
RATE = 800  # messages a second
GAP_S = 0.1  # event-time seconds per offer: 2m windows of 1,200 offers
WINDOW_MS = 120_000
# Offers per phase: five windows of baseline, four of drop, five to recover.
NORMAL_OFFERS, DROP_OFFERS, RECOVERY_OFFERS = 6_000, 4_800, 6_000
ENV = {
    "UPSELL_WINDOWS": "2m",
    "UPSELL_GRACE": "5s",
    # The worker holds a window (the page shows it) until its attribution window is over.
    "UPSELL_ATTRIBUTION_WINDOW": "30m",
    "UPSELL_DROP_AGE": "2m",
    "UPSELL_DROP_MIN_OFFERS": "100",
    "UPSELL_DROP_BASELINE_WINDOWS": "4",
    "UPSELL_DROP_SIGNIFICANCE": "0.00001",
    "UPSELL_DROP_MIN_RELATIVE": "0.3",
}
HOUR_MS = 3_600_000
# The simulator delays conversions at most this long: a phase's last events come soon
# after its last offer, so the next phase starts a window or two later.
SIMULATOR_ENV = {"UPSELL_ATTRIBUTION_WINDOW": "2m"}


def run_phase(
    service: Deployment, name: str, start_ms: int, offers: int, drop: str | None = None
) -> dict[str, Any]:
    """One simulator run to its end, then until the worker group has processed it all."""
    truth_file = service.data_dir / f"{service.name}-{name}.json"
    args = [
        "simulate",
        "--rate",
        str(RATE),
        "--count",
        str(offers),
        "--seed",
        str(len(name)),
        "--seconds-per-offer",
        str(GAP_S),
        "--start",
        rfc3339(start_ms),
        "--truth-file",
        str(truth_file),
    ]
    if drop is not None:
        args += ["--drop", drop]
    done = subprocess.run(
        [*CLI, *args],
        env={**service.env(), **SIMULATOR_ENV},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    service.wait_caught_up()
    truth: dict[str, Any] = json.loads(truth_file.read_text())
    return truth


def next_window(ts: str) -> int:
    ms = parse_ts(ts)
    return ms - ms % WINDOW_MS + WINDOW_MS


def api(service: Deployment, **query: str) -> dict[str, Any]:
    """/api/rates with the 36 windows the demo's charts draw."""
    return rates_document(service, **{"windows": "36", **query})


def drop_gauges(service: Deployment) -> dict[tuple[str, str, str], float]:
    return {
        (labels["window"], labels["channel"], labels["segment"]): value
        for (name, frozen), value in service.metrics().items()
        if name == "upsell_rate_drop_active"
        for labels in [dict(frozen)]
    }


def describe(
    path: Path,
    started_at_ms: int,
    event_start_ms: int,
    drop_from_ms: int,
    drop_until_ms: int,
    from_wall_s: float,
    until_wall_s: float,
) -> None:
    """The demo's description of this run, as `upsell-stream demo` writes it."""
    speed = RATE / expected_messages_per_offer(ScenarioConfig()) * GAP_S
    source = DemoSource(
        started_at_ms,
        event_start_ms,
        round(speed, 1),
        InjectedDrop(
            DROPPED,
            FACTOR,
            tuple(
                RateChange(s, true_rate(DROPPED, s), true_rate(DROPPED, s) * FACTOR)
                for s in SEGMENTS
            ),
            drop_from_ms,
            drop_until_ms,
            from_wall_s,
            until_wall_s,
        ),
    )
    path.write_text(json.dumps(source.as_json()))


class Page:
    def __init__(self, driver: Any, url: str, shots: Path | None) -> None:
        self.driver, self.url, self.shots = driver, url, shots

    def drawn(self) -> None:
        from selenium.webdriver.common.by import By

        try:
            wait_until(
                lambda: self.driver.find_elements(By.CSS_SELECTOR, "#grid td[data-channel]"),
                30,
                "the page to draw the grid",
            )
        except AssertionError as error:
            shown = self.driver.find_element(By.ID, "error").text
            raise AssertionError(
                f"{error}; the page says {shown!r}; console: {self.driver.get_log('browser')}"
            ) from None

    def drawn_state(self) -> tuple[set[tuple[str, str, str]], bool, str | None, str]:
        """The alert panel, the drop phase and the event clock as drawn, read in one
        script: the page redraws them every refresh, so an element found in one call may be
        gone by the next (a StaleElementReferenceException)."""
        items, none, phase, clock = self.driver.execute_script(
            "const panel = document.getElementById('alerts');"
            "return [Array.from(panel.querySelectorAll('li.alert'), li =>"
            " [li.dataset.window, li.dataset.channel, li.dataset.segment]),"
            " panel.querySelector('li.none') !== null,"
            " document.getElementById('source-drop')?.getAttribute('data-phase') ?? null,"
            " document.getElementById('event-clock').innerText];"
        )
        shown = {(window, channel, segment) for window, channel, segment in items}
        return shown, bool(none), phase, str(clock)

    def shows(self, alerts: set[tuple[str, str, str]], phase: str, stream_time: str) -> None:
        """Until the page has drawn the API's state: these alerts, this drop phase."""

        def drawn() -> bool:
            shown, none, drawn_phase, clock = self.drawn_state()
            return (
                shown == alerts
                and none == (not alerts)
                and drawn_phase == phase
                and clock.startswith(stream_time[:10] + " " + stream_time[11:19])
            )

        wait_until(drawn, 30, f"the page to show alerts {alerts} and drop phase {phase}")

    def screenshot(self, name: str) -> None:
        if self.shots is None:
            return
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1300, int(height) + 40)
        self.driver.save_screenshot(str(self.shots / f"demo-{name}.png"))
        self.driver.set_window_size(1300, 1900)


def test_the_demo_story_before_during_and_after_a_drop_in_chromium(data_dir: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    shots_dir = os.environ.get("UPSELL_SCREENSHOTS")
    shots = Path(shots_dir) if shots_dir else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    info = data_dir / "source.json"
    now_ms = int(time.time() * 1000)
    # Six hours before the wall clock: event-time axis labels cannot be wall-clock ones.
    event_start = now_ms - now_ms % HOUR_MS - 6 * HOUR_MS
    started_at = now_ms
    with deployment(
        data_dir, partitions=2, extra_env={**ENV, "UPSELL_DEMO_INFO": str(info)}
    ) as service:
        assert service.cli("topics", "create").returncode == 0
        service.start_worker()
        normal = run_phase(service, "normal", event_start, NORMAL_OFFERS)
        drop_start = next_window(normal["last_ts"])
        # The drop's end is not known before the drop phase has run: described as planned.
        planned_end = drop_start + DROP_OFFERS * int(GAP_S * 1000)
        elapsed_s = (time.time() * 1000 - started_at) / 1000
        describe(
            info,
            started_at,
            event_start,
            drop_start,
            planned_end,
            elapsed_s,
            elapsed_s + DROP_OFFERS * expected_messages_per_offer(ScenarioConfig()) / RATE,
        )
        driver = browser()
        try:
            page = Page(driver, f"http://127.0.0.1:{service.web_port}/", shots)
            driver.get(page.url)
            page.drawn()

            # Before: nothing fired on normal data, anywhere.
            before = api(service)
            assert before["alerts"] == []
            assert set(drop_gauges(service).values()) <= {0.0}
            assert before["source"]["kind"] == "simulated"
            page.shows(set(), "not", before["stream_time"])
            text = driver.find_element(By.ID, "source").text
            assert "Simulated data" in text and f"channel {DROPPED}" in text
            page.screenshot("before")

            # During: the dropped channel's alert on the panel, in the API, on /metrics
            # and on the alerts topic, and no other channel's.
            dropped = run_phase(
                service, "drop", drop_start, DROP_OFFERS, drop=f"{DROPPED}:0:{FACTOR}"
            )
            recovery_start = next_window(dropped["last_ts"])
            describe(
                info,
                started_at,
                event_start,
                drop_start,
                recovery_start,
                elapsed_s,
                (time.time() * 1000 - started_at) / 1000,
            )
            during = api(service)
            active = {(a["window"], a["channel"], a["segment"]) for a in during["alerts"]}
            # The dropped channel, and all channels together (it is a large share of them).
            channels = {channel for _, channel, _ in active}
            assert DROPPED in channels and channels <= {DROPPED, "__all__"}, active
            gauges = drop_gauges(service)
            assert {series for series, value in gauges.items() if value == 1.0} == active
            fired = {
                (r["window"], r["channel"], r["segment"])
                for r in in_stream_alerts(service)
                if r["state"] == "fired"
            }
            # All channels together may also have fired and resolved already (a dip of a
            # few points is a significant drop one window, normal the next).
            assert active <= fired and {c for _, c, _ in fired} <= {DROPPED, "__all__"}, fired
            published = [r for r in in_stream_alerts(service) if r["state"] == "fired"]
            for alert in during["alerts"]:
                assert alert in published, alert  # the fired record as published, field for field
                assert alert["observed_rate"] < alert["baseline_rate"] * 0.7, alert
            page.shows(active, "now", during["stream_time"])
            first = driver.find_element(
                By.CSS_SELECTOR, f'#alerts li.alert[data-channel="{DROPPED}"]'
            )
            assert "vs baseline" in first.text
            page.screenshot("during")

            # After: the rate recovered, every alert resolved, on the topic too.
            run_phase(service, "recovery", recovery_start, RECOVERY_OFFERS)
            after = api(service)
            assert after["alerts"] == []
            assert all(drop_gauges(service)[series] == 0.0 for series in active)
            resolved = {
                (r["window"], r["channel"], r["segment"])
                for r in in_stream_alerts(service)
                if r["state"] == "resolved"
            }
            assert resolved == fired
            page.shows(set(), "over", after["stream_time"])
            page.screenshot("after")

            # The chart: its time axis is in event time (UTC), within the windows shown.
            chart = driver.find_element(By.ID, "chart-channel")
            starts = [parse_ts(w["window_start"]) for w in after["windows"]]
            first_start, last_end = min(starts), max(starts) + WINDOW_MS
            minutes = {rfc3339(ms)[11:16] for ms in range(first_start, last_end + 1, 60_000)}
            ticks = json.loads(chart.get_attribute("data-x-ticks"))
            assert len(ticks) >= 3 and set(ticks) <= minutes, (ticks, sorted(minutes))
            assert json.loads(chart.get_attribute("data-bands")) == after["bands"]["campaign"]
            filling = next((w for w in after["windows"] if w["current"] and not w["closed"]), None)
            assert chart.get_attribute("data-filling") == (
                filling["window_start"] if filling else ""
            )

            # A hovered value: the legend shows the window under the cursor and its rate.
            over = chart.find_element(By.CSS_SELECTOR, ".u-over")
            ActionChains(driver).move_to_element_with_offset(
                over, -over.size["width"] // 4, 0
            ).perform()
            legend = {
                row.find_element(By.CSS_SELECTOR, ".u-label").text: row.find_element(
                    By.CSS_SELECTOR, ".u-value"
                ).text
                for row in chart.find_elements(By.CSS_SELECTOR, ".u-legend .u-series")
            }
            hovered = legend["window (event time)"]
            document = api(service)
            window = next(
                w
                for w in document["windows"]
                if w["window_start"][:16].replace("T", " ") + " UTC" == hovered
            )
            row = next(
                r for r in window["rows"] if r["channel"] == DROPPED and r["segment"] == "__all__"
            )
            shown = float(legend[DROPPED].removesuffix(" %"))
            assert abs(shown - 100 * row["rate"]) <= 0.05 + 1e-9, (legend, row)

            # uPlot under the page's Content-Security-Policy: only the page's scripts, no
            # report of anything blocked.
            base = f"http://127.0.0.1:{service.web_port}"
            assert [
                s.get_attribute("src") for s in driver.find_elements(By.TAG_NAME, "script")
            ] == [f"{base}/static/uPlot.iife.min.js", f"{base}/static/app.js"]
            assert csp_reports(driver) == []
        finally:
            driver.quit()
