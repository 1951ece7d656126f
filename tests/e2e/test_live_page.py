"""The live page in a real browser, the query API against /metrics and the topics, the demo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.harness import (
    CLI,
    Deployment,
    deployment,
    free_port,
    latest_by_key,
    read_topic,
    wait_until,
)
from tests.e2e.test_scripted_kpis import LATE, OFFERS, PURCHASES, Z1, Offer, Purchase
from tests.e2e.test_scripted_rates import at, family, phase

ENV = {"UPSELL_WINDOWS": "5m,1h", "UPSELL_GRACE": "1m", "UPSELL_ATTRIBUTION_WINDOW": "1h"}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def feed(service: Deployment) -> None:
    """The KPI scripted events up to stream time 10:30 (5m window 10:00 closed, not final)."""
    offers, purchases = service.topics["offers"], service.topics["purchases"]
    phase(service, [o.message(offers) for o in OFFERS])
    phase(service, [p.message(purchases) for p in PURCHASES])
    phase(service, [Z1.message(offers)])
    phase(service, [LATE.message(purchases)])


def gauges_of_window(samples: dict[Any, float], label: str) -> int:
    return sum(1 for key in family(samples, "upsell_window_offers") if ("window", label) in key)


def api(service: Deployment, **query: str) -> dict[str, Any]:
    response = requests.get(
        f"http://127.0.0.1:{service.web_port}/api/rates", params=query, timeout=10
    )
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


def test_api_equals_metrics_and_output_records(data_dir: Path) -> None:
    with deployment(data_dir, extra_env=ENV) as service:
        assert service.cli("topics", "create").returncode == 0
        service.start_worker()
        feed(service)
        samples = service.metrics()
        bad = requests.get(
            f"http://127.0.0.1:{service.web_port}/api/rates",
            params={"view": "channel_segment", "colour": "red"},
            timeout=10,
        )
        assert bad.status_code == 400 and "colour" in bad.json()["error"]
        assert (
            requests.get(
                f"http://127.0.0.1:{service.web_port}/api/rates",
                params={"window": "7m"},
                timeout=10,
            ).status_code
            == 400
        )
        for query in (
            {"windows": "\u00b2"},
            {"windows": "-1"},
            {"windows": ""},
            {"windows": "9" * 5000},
            {"view": "<b>"},
        ):
            answer = requests.get(
                f"http://127.0.0.1:{service.web_port}/api/rates", params=query, timeout=10
            )
            assert answer.status_code == 400, (query, answer.text)
            assert "\n" not in answer.json()["error"]
        # Faust's own pages (tables' contents, the cluster's routes, internals) are off.
        for path in (
            "/table/",
            "/table/partition-state/",
            "/router/",
            "/graph/",
            "/performance/",
            "/stats/",
            "/assignment/",
        ):
            answer = requests.get(f"http://127.0.0.1:{service.web_port}{path}", timeout=10)
            assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])

        # The current window against the gauges of /metrics.
        rates = api(service, view="channel_segment", window="1h")
        current = next(w for w in rates["windows"] if w["current"])
        assert current["window_start"] == "2026-11-22T10:00:00.000Z"
        for row in current["rows"]:
            labels = frozenset(
                {("channel", row["channel"]), ("segment", row["segment"]), ("window", "1h")}
            )
            assert samples[("upsell_window_offers", labels)] == row["offers"]
            assert samples[("upsell_window_conversions", labels)] == row["conversions"]
            assert samples[("upsell_rate", labels)] == row["rate"]
            assert samples[("upsell_customer_rate", labels)] == row["customer_rate"]
        assert len(current["rows"]) == gauges_of_window(samples, "1h")
        purchases = api(service, view="purchases", window="1h")
        for row in next(w for w in purchases["windows"] if w["current"])["rows"]:
            purchase_labels = frozenset(
                {
                    ("loyalty", row["loyalty"]),
                    ("product_line", row["product_line"]),
                    ("window", "1h"),
                }
            )
            gauge = samples.get(("upsell_transaction_rate", purchase_labels))
            assert gauge == row["transaction_rate"]

        # The closed, not yet final 5m window against the latest records of the topics.
        rates_records = latest_by_key(read_topic(service.topics["rates"]))
        kpi_records = latest_by_key(read_topic(service.topics["kpis"]))
        compared = 0
        for view, records in (
            ("channel_segment", rates_records),
            ("campaign", kpi_records),
            ("purchases", kpi_records),
        ):
            document = api(service, view=view, window="5m")
            closed = next(
                w for w in document["windows"] if w["window_start"] == "2026-11-22T10:00:00.000Z"
            )
            assert closed["closed"] and not closed["current"]
            for row in closed["rows"]:
                first, second = (row[d] for d in document["dimensions"])
                key = f"5m|2026-11-22T10:00:00.000Z|{first}|{second}"
                record = records[key if view == "channel_segment" else f"{view}|{key}"]
                assert record["final"] is False
                assert {
                    k: v
                    for k, v in record.items()
                    if k
                    not in ("emitted_at", "final", "view", "window", "window_start", "window_end")
                } == row
                compared += 1
        assert compared > 20


def browser() -> Any:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    # The console, to see that the Content-Security-Policy blocks nothing of the page.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1300,1900",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(
        executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"
    )
    return webdriver.Chrome(options=options, service=service)


def test_live_page_in_a_real_browser_shows_the_metrics(data_dir: Path) -> None:
    from selenium.webdriver.common.by import By

    with deployment(data_dir, extra_env=ENV) as service:
        assert service.cli("topics", "create").returncode == 0
        service.start_worker()
        feed(service)
        samples = service.metrics()
        driver = browser()
        try:
            # The current window, which the gauges of /metrics are about (by default the
            # page shows the last closed one).
            driver.get(f"http://127.0.0.1:{service.web_port}/?window=1h&show=current")
            wait_until(
                lambda: (
                    driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true"
                ),
                30,
                "the page to draw its first data",
            )
            cells = driver.find_elements(By.CSS_SELECTOR, "#grid td[data-channel]")
            assert len(cells) == gauges_of_window(samples, "1h")
            for cell in cells:
                labels = frozenset(
                    {
                        ("channel", cell.get_attribute("data-channel")),
                        ("segment", cell.get_attribute("data-segment")),
                        ("window", "1h"),
                    }
                )
                assert float(cell.get_attribute("data-rate")) == samples[("upsell_rate", labels)]
            tiles = {
                t.get_attribute("data-kpi"): t.get_attribute("data-value")
                for t in driver.find_elements(By.CSS_SELECTOR, "#tiles .tile")
            }
            everything = frozenset(
                {("channel", "__all__"), ("segment", "__all__"), ("window", "1h")}
            )
            assert float(tiles["rate"]) == samples[("upsell_rate", everything)]
            assert float(tiles["customer_rate"]) == samples[("upsell_customer_rate", everything)]
            all_purchases = frozenset(
                {("loyalty", "__all__"), ("product_line", "__all__"), ("window", "1h")}
            )
            members = frozenset(
                {("loyalty", "member"), ("product_line", "__all__"), ("window", "1h")}
            )
            assert (
                float(tiles["transaction_rate"])
                == samples[("upsell_transaction_rate", all_purchases)]
            )
            assert float(tiles["loyalty_rate"]) == samples[("upsell_transaction_rate", members)]
            assert float(tiles["aov_uplift"]) == pytest.approx(
                samples[("upsell_aov_uplift", all_purchases)]
            )
            for chart in ("chart-channel", "chart-campaign", "chart-product"):
                drawn = driver.find_element(By.ID, chart)
                assert int(drawn.get_attribute("data-series")) > 1, chart
                assert drawn.find_elements(By.CSS_SELECTOR, "canvas"), chart
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "live-page.png"))
            if os.environ.get("UPSELL_UPDATE_SCREENSHOT"):
                DOCS.mkdir(exist_ok=True)
                shutil.copy(ARTIFACTS / "live-page.png", DOCS / "live-page.png")
        finally:
            driver.quit()


TITLE = "upsell-stream · live upsell rates"
# Markup in every dimension a producer names; each would run or draw if parsed.
CHANNEL = """<img src=x onerror="document.title='PWNED'">"""
SEGMENT = "<script>window.pwned=1</script>"
CAMPAIGN_TYPE = """"><svg onload="window.pwned=2"><img src=x onerror="window.pwned=3">"""
PRODUCT_LINE = '<b>bold</b> &amp; <iframe src="javascript:window.pwned=4"></iframe>'
HOSTILE_OFFERS = [
    Offer("h1", "cH1", CHANNEL, SEGMENT, CAMPAIGN_TYPE, PRODUCT_LINE, at(1)),
    Offer("h2", "cH2", CHANNEL, "smb", CAMPAIGN_TYPE, "pro", at(2)),
    Offer("h3", "cH3", "email", SEGMENT, "email_offer", PRODUCT_LINE, at(3)),
]
HOSTILE_PURCHASE = Purchase(
    "hp1", "cH1", at(4), 25.0, True, {"offer_id": "h1", "product_line": PRODUCT_LINE}
)


def security_headers_of(url: str) -> dict[str, str]:
    headers = requests.get(url, timeout=10).headers
    return {
        name: headers.get(name, "")
        for name in ("Content-Security-Policy", "X-Content-Type-Options")
    }


def csp_reports(driver: Any) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def test_markup_from_producers_is_shown_as_text_and_never_runs(data_dir: Path) -> None:
    from selenium.webdriver.common.by import By

    with deployment(data_dir, extra_env=ENV) as service:
        assert service.cli("topics", "create").returncode == 0
        service.start_worker()
        offers, purchases = service.topics["offers"], service.topics["purchases"]
        phase(service, [o.message(offers) for o in HOSTILE_OFFERS])
        phase(service, [HOSTILE_PURCHASE.message(purchases)])
        base = f"http://127.0.0.1:{service.web_port}"
        for path in (
            "/",
            "/static/app.js",
            "/static/style.css",
            "/static/uPlot.iife.min.js",
            "/static/uPlot.min.css",
            "/api/rates",
        ):
            headers = security_headers_of(base + path)
            assert "script-src 'self'" in headers["Content-Security-Policy"], path
            assert "object-src 'none'" in headers["Content-Security-Policy"], path
            assert headers["X-Content-Type-Options"] == "nosniff", path
        driver = browser()
        try:
            driver.get(f"{base}/?window=1h&show=current")
            wait_until(
                lambda: driver.find_elements(By.CSS_SELECTOR, "#grid td[data-channel]"),
                30,
                "the page to draw the grid",
            )

            def text(node: Any) -> str:
                return str(node.get_property("textContent"))

            # The grid: the channel as a row heading, the segment as a column heading.
            grid = driver.find_element(By.ID, "grid")
            assert CHANNEL in [text(th) for th in grid.find_elements(By.CSS_SELECTOR, "tbody th")]
            assert SEGMENT in [text(th) for th in grid.find_elements(By.CSS_SELECTOR, "thead th")]
            cells = {
                (c.get_attribute("data-channel"), c.get_attribute("data-segment")): c.get_attribute(
                    "data-rate"
                )
                for c in grid.find_elements(By.CSS_SELECTOR, "td[data-channel]")
            }
            assert float(cells[(CHANNEL, SEGMENT)]) == 1.0  # h1, converted by hp1
            assert float(cells[(CHANNEL, "smb")]) == 0.0
            # Charts' legends (uPlot's): the campaign types, product lines and channels.
            for chart, name in (
                ("chart-channel", CHANNEL),
                ("chart-campaign", CAMPAIGN_TYPE),
                ("chart-product", PRODUCT_LINE),
            ):
                legend = driver.find_elements(By.CSS_SELECTOR, f"#{chart} .u-legend .u-label")
                assert name in [text(label) for label in legend], chart
            # The purchases table: the product line in its cell.
            rows = driver.find_elements(By.CSS_SELECTOR, "#purchases tbody tr")
            assert PRODUCT_LINE in [text(row.find_elements(By.TAG_NAME, "td")[1]) for row in rows]

            # Nothing parsed, nothing run.
            assert driver.title == TITLE
            assert driver.execute_script("return typeof window.pwned") == "undefined"
            for tag in ("img", "iframe", "b", "object", "embed"):
                assert driver.find_elements(By.TAG_NAME, tag) == [], tag
            # No svg (the charts are canvases), and nothing has a handler.
            assert driver.find_elements(By.CSS_SELECTOR, "svg") == []
            assert driver.find_elements(By.CSS_SELECTOR, "[onerror], [onload]") == []
            assert [
                s.get_attribute("src") for s in driver.find_elements(By.TAG_NAME, "script")
            ] == [f"{base}/static/uPlot.iife.min.js", f"{base}/static/app.js"]
            assert csp_reports(driver) == []
        finally:
            driver.quit()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _run_demo(env: dict[str, str], log: Path, web: int) -> str:
    """One `upsell-stream demo` until it serves rates and describes its data, then Ctrl-C;
    its output."""
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [*CLI, "demo"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        page = wait_until(lambda: _get(f"http://127.0.0.1:{web}/"), 240, "the demo's page")
        assert "upsell-stream" in page
        rates = wait_until(
            lambda: _rates_with_events(web),
            120,
            "the demo's description and its first events in the API",
        )
        described = rates["source"]
        assert described["kind"] == "simulated" and described["drop"]["channel"] == "email"
        assert _processes_mentioning(env["UPSELL_DATA_DIR"])  # the broker runs
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=120) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=30)
    return log.read_text()


def test_demo_shows_the_page_resumes_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    port, web = free_port(), free_port()
    data = tmp_path / "demo-data"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "UPSELL_DATA_DIR": str(data),
        "UPSELL_WEB_PORT": str(web),
        "UPSELL_APP_ID": "demo-test",
    }
    first = _run_demo(env, tmp_path / "first.log", web)
    assert "starting clean (no previous demo data)" in first
    assert "serving rates" in first and "(clean start)" in first
    stopped_at = json.loads((data / "demo" / "state.json").read_text())["stream_time"]
    time.sleep(1)
    assert _processes_mentioning(str(data)) == [], first
    assert _processes_mentioning("demo-test") == []
    assert "nothing left running" in first

    # On the first one's data: resumed, event time on after where the first one stopped.
    second = _run_demo(env, tmp_path / "second.log", web)
    assert "resuming the previous demo's data" in second and stopped_at in second
    assert "(resumed)" in second
    source = json.loads((data / "demo" / "source.json").read_text())
    assert source["event_start"] > stopped_at  # RFC 3339 UTC strings of one format
    time.sleep(1)
    assert _processes_mentioning(str(data)) == [], second
    assert "nothing left running" in second


def _rates_with_events(web: int) -> dict[str, Any] | None:
    document: dict[str, Any] = json.loads(_get(f"http://127.0.0.1:{web}/api/rates") or "{}")
    return document if document.get("source") and document.get("stream_time") else None


def _get(url: str) -> str | None:
    try:
        response = requests.get(url, timeout=3)
    except requests.RequestException:
        return None
    return response.text if response.ok else None
