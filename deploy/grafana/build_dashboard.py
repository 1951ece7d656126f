"""The upsell-stream Grafana dashboard, as code.

    python deploy/grafana/build_dashboard.py     writes deploy/grafana/dashboards/upsell.json

Edit this file, not the JSON: a test checks that the committed JSON is exactly what this
script writes, and the end-to-end alerting test runs every panel's query against a real
Prometheus. Plain dictionaries in the dashboard JSON model (schemaVersion 39, Grafana 10
and 11), so nothing beyond the standard library is needed.

Query rules (docs/outputs.md, "Queries"): a rate across workers is summed conversions over
summed offers; a window gauge is always read for one `window`; the `__all__` roll-ups are
their own label values, so queries keep `channel` and `segment` rather than summing over
them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

UID = "upsell-stream"
DATASOURCE = {"type": "prometheus", "uid": "upsell-prometheus"}
OUTPUT = Path(__file__).parent / "dashboards" / "upsell.json"

Json = dict[str, Any]

# The variables every channel/segment query filters by.
SELECTED = 'channel=~"$channel", segment=~"$segment"'


def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Json:
    """One query; `instant` for the latest value only, `table` for table panels."""
    return {
        "datasource": DATASOURCE,
        "refId": "A",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": "table" if table else "time_series",
    }


def panel(
    kind: str,
    title: str,
    description: str,
    targets: list[Json],
    grid: tuple[int, ...],
    *,
    unit: str = "short",
    options: Json | None = None,
    custom: Json | None = None,
    extra: Json | None = None,
) -> Json:
    x, y, w, h = grid
    result: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom or {}}, "overrides": []},
        "options": options or {},
    }
    result.update(extra or {})
    return result


def row(title: str, y: int) -> Json:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


def timeseries(
    title: str, description: str, targets: list[Json], grid: tuple[int, ...], unit: str = "short"
) -> Json:
    return panel(
        "timeseries",
        title,
        description,
        targets,
        grid,
        unit=unit,
        custom={"lineWidth": 1, "fillOpacity": 0, "showPoints": "never"},
        options={
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    )


def variable(name: str, label: str, query: str, *, multi: bool, default: str) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,  # on time range change: new channels and segments show up
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        # The roll-up `__all__` is a value like any other: All must match it too.
        **({"allValue": ".*"} if multi else {}),
        "current": {"text": default, "value": "$__all" if default == "All" else default},
    }


def rate_panels(y: int) -> list[Json]:
    return [
        row("Upsell rates", y),
        timeseries(
            "Upsell rate per channel (current window)",
            "Conversions / offers of the current window of the selected size, summed over "
            "the workers (cohort: conversions of that window's offers). It starts low in each "
            "new window and grows as conversions arrive; compare windows in the rates topic.",
            [
                target(
                    f'channel_segment_window:upsell_rate:ratio{{window="$window", {SELECTED}}}',
                    "{{channel}} / {{segment}}",
                )
            ],
            (0, y + 1, 12, 9),
            unit="percentunit",
        ),
        timeseries(
            "Conversions per offer (flow)",
            "Conversions counted per offer presented over the interval, from the counters: "
            "independent of windows, but it mixes cohorts (conversions of earlier offers).",
            [
                target(
                    f"sum by (channel, segment) (rate(upsell_conversions_total{{{SELECTED}}}"
                    "[$__rate_interval]))\n/\n"
                    f"(sum by (channel, segment) (rate(upsell_offers_presented_total{{{SELECTED}}}"
                    "[$__rate_interval])) > 0)",
                    "{{channel}} / {{segment}}",
                )
            ],
            (12, y + 1, 12, 9),
            unit="percentunit",
        ),
        timeseries(
            "Offers vs conversions per minute",
            "Offers presented and conversions counted per minute, summed over the workers.",
            [
                target(
                    f"sum by (channel, segment) (rate(upsell_offers_presented_total{{{SELECTED}}}"
                    "[$__rate_interval])) * 60",
                    "offers {{channel}} / {{segment}}",
                ),
                target(
                    f"sum by (channel, segment) (rate(upsell_conversions_total{{{SELECTED}}}"
                    "[$__rate_interval])) * 60",
                    "conversions {{channel}} / {{segment}}",
                ),
            ],
            (0, y + 10, 12, 9),
        ),
        panel(
            "table",
            "Rate by segment and channel (current window)",
            "The current window's rate of every channel (rows) and segment (columns), the "
            "__all__ roll-ups included.",
            [
                target(
                    'channel_segment_window:upsell_rate:ratio{window="$window", '
                    'channel=~"$channel"}',
                    instant=True,
                    table=True,
                )
            ],
            (12, y + 10, 12, 9),
            unit="percentunit",
            custom={
                "cellOptions": {"type": "color-background", "mode": "gradient"},
                "align": "center",
            },
            options={"showHeader": True, "cellHeight": "sm"},
            extra={
                "transformations": [
                    {
                        "id": "groupingToMatrix",
                        "options": {
                            "columnField": "segment",
                            "rowField": "channel",
                            "valueField": "Value",
                        },
                    }
                ],
                "fieldConfig": {
                    "defaults": {
                        "unit": "percentunit",
                        "decimals": 1,
                        "custom": {
                            "cellOptions": {"type": "color-background", "mode": "gradient"},
                            "align": "center",
                        },
                        "color": {"mode": "continuous-RdYlGr"},
                    },
                    "overrides": [],
                },
            },
        ),
    ]


def alert_panels(y: int) -> list[Json]:
    return [
        row("Alerts", y),
        panel(
            "table",
            "Firing alerts",
            "Alerts of the upsell-stream rules firing now (Prometheus ALERTS series).",
            [
                target(
                    "sum by (alertname, severity, channel, segment, window, topic, instance) "
                    '(ALERTS{alertstate="firing", alertname=~"Upsell.*"})',
                    instant=True,
                    table=True,
                )
            ],
            (0, y + 1, 12, 8),
            options={"showHeader": True},
            extra={
                "transformations": [
                    {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}
                ]
            },
        ),
        panel(
            "state-timeline",
            "In-stream drop detector",
            "1 while the worker's detector holds a rate-drop alert for the key (windows of "
            "the selected size measured at UPSELL_DROP_AGE against earlier windows).",
            [
                target(
                    f'max by (channel, segment) (upsell_rate_drop_active{{window="$window", '
                    f"{SELECTED}}})",
                    "{{channel}} / {{segment}}",
                )
            ],
            (12, y + 1, 12, 8),
            options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
            extra={
                "fieldConfig": {
                    "defaults": {
                        "color": {"mode": "thresholds"},
                        "thresholds": {
                            "mode": "absolute",
                            "steps": [
                                {"color": "green", "value": None},
                                {"color": "red", "value": 1},
                            ],
                        },
                        "mappings": [
                            {
                                "type": "value",
                                "options": {"0": {"text": "normal"}, "1": {"text": "drop"}},
                            }
                        ],
                        "custom": {},
                    },
                    "overrides": [],
                }
            },
        ),
        panel(
            "bargauge",
            "In-stream alerts in the time range",
            "Rate-drop alerts fired and resolved by the worker's detector over the dashboard's "
            "time range, per channel.",
            [
                target(
                    f'sum by (channel, state) (increase(upsell_alerts_total{{window="$window", '
                    f"{SELECTED}}}[$__range]))",
                    "{{channel}} {{state}}",
                    instant=True,
                )
            ],
            (0, y + 9, 24, 6),
            options={
                "displayMode": "basic",
                "orientation": "horizontal",
                "reduceOptions": {"calcs": ["lastNotNull"], "values": False},
            },
        ),
    ]


def pipeline_panels(y: int) -> list[Json]:
    return [
        row("Pipeline health", y),
        timeseries(
            "Input messages read per second",
            "Messages the workers read and validated from each input topic.",
            [
                target(
                    "sum by (topic) (rate(upsell_events_processed_total[$__rate_interval]))",
                    "{{topic}}",
                )
            ],
            (0, y + 1, 8, 8),
            unit="ops",
        ),
        timeseries(
            "Consumer lag",
            "Messages not yet read, per topic: the inputs and the internal stages.",
            [target("sum by (topic) (upsell_consumer_lag)", "{{topic}}")],
            (8, y + 1, 8, 8),
        ),
        panel(
            "stat",
            "Workers up",
            "Workers Prometheus scrapes successfully.",
            [target('sum(up{job="upsell-stream"})', "workers")],
            (16, y + 1, 8, 8),
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "values": False},
                "colorMode": "background",
                "graphMode": "area",
            },
        ),
        timeseries(
            "Rejected messages per minute",
            "Messages copied to the dead-letter topic, by input topic and reason.",
            [
                target(
                    "sum by (topic, reason) (rate(upsell_events_rejected_total"
                    "[$__rate_interval])) * 60",
                    "{{topic}} {{reason}}",
                )
            ],
            (0, y + 9, 12, 8),
        ),
        timeseries(
            "Late and duplicate events per minute",
            "Events that arrived after their window of some size had closed, and re-sent "
            "events dropped as duplicates.",
            [
                target(
                    "sum by (topic) (rate(upsell_events_late_total[$__rate_interval])) * 60",
                    "late {{topic}}",
                ),
                target(
                    "sum by (topic) (rate(upsell_events_duplicate_total[$__rate_interval])) * 60",
                    "duplicate {{topic}}",
                ),
            ],
            (12, y + 9, 12, 8),
        ),
    ]


def dashboard() -> Json:
    panels = [*rate_panels(0), *alert_panels(19), *pipeline_panels(35)]
    for number, item in enumerate(panels, start=1):
        item["id"] = number
    return {
        "uid": UID,
        "title": "Upsell rates",
        "description": "Live upsell rates per channel and segment, rate-drop alerts and the "
        "health of the upsell-stream pipeline.",
        "tags": ["upsell-stream"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                variable(
                    "window",
                    "Window",
                    "label_values(upsell_window_offers, window)",
                    multi=False,
                    default="1h",
                ),
                variable(
                    "channel",
                    "Channel",
                    "label_values(upsell_offers_presented_total, channel)",
                    multi=True,
                    default="All",
                ),
                variable(
                    "segment",
                    "Segment",
                    'label_values(upsell_offers_presented_total{channel=~"$channel"}, segment)',
                    multi=True,
                    default="__all__",
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
