"""deploy/grafana: the committed dashboard is the generator's output, and it fits the
provisioned data source, the contract's query rules and the worker's metrics."""

from __future__ import annotations

import importlib.util
import json
import re
from types import ModuleType
from typing import Any

import yaml

from tests.deploy.tools import DEPLOY

GRAFANA = DEPLOY / "grafana"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (GRAFANA / "dashboards" / "upsell.json").read_text(encoding="utf-8")
    )
    return loaded


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_committed_json_is_the_generators_output() -> None:
    rendered = generator().render()
    assert (GRAFANA / "dashboards" / "upsell.json").read_text(encoding="utf-8") == rendered, (
        "run: python deploy/grafana/build_dashboard.py"
    )


def test_panels_use_the_provisioned_data_source() -> None:
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    (source,) = sources["datasources"]
    dashboard = committed()
    for item in [*dashboard["panels"], *dashboard["templating"]["list"]]:
        if item.get("type") != "row":
            assert item["datasource"] == {"type": "prometheus", "uid": source["uid"]}
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "upsell.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_variables_and_panels_the_issue_asks_for() -> None:
    dashboard = committed()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"window", "channel", "segment"}
    # A window gauge must always be read for one window: no multi-value, no All.
    assert not variables["window"]["multi"] and not variables["window"]["includeAll"]
    titles = {p["title"] for p in dashboard["panels"]}
    assert {
        "Upsell rate per channel (current window)",
        "Offers vs conversions per minute",
        "Rate by segment and channel (current window)",
        "Firing alerts",
        "Input messages read per second",
        "Consumer lag",
        "Rejected messages per minute",
        "Late and duplicate events per minute",
    } <= titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_queries_follow_the_contracts_rules() -> None:
    for expr in exprs(committed()):
        # Window gauges (and the series recorded from them) always for the selected window.
        for name in (
            "upsell_window_",
            "upsell_rate_drop_active",
            "upsell_alerts_total",
            "channel_segment_window:",
        ):
            if name in expr:
                assert 'window="$window"' in expr, expr
        # Never an average of ratios, never upsell_rate summed.
        assert "avg" not in expr and not re.search(r"sum[^(]*\(\s*upsell_rate\b", expr)
        # Channel and segment are kept when summing, so roll-ups are not counted twice.
        for by in re.findall(
            r"sum by \(([^)]*)\) \((?:rate|increase)\(upsell_(?:offers|conv)", expr
        ):
            assert {"channel", "segment"} <= {label.strip() for label in by.split(",")}, expr


def test_queries_name_only_metrics_the_worker_or_the_rules_export() -> None:
    source = (DEPLOY.parent / "stream_app" / "serving" / "metrics.py").read_text()
    recorded = (DEPLOY / "prometheus" / "rules" / "upsell-recording.yml").read_text()
    for expr in exprs(committed()):
        for name in re.findall(r"\b(upsell_[a-z_]+|[a-z_]+:[a-z_:0-9]+)\b", expr):
            base = name.removesuffix("_total")
            assert f'"{base}"' in source or f"record: {name}" in recorded, name
