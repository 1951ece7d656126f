"""deploy/prometheus: the configs load, the rules pass promtool's checks and lint, and the
promtool unit tests (deploy/prometheus/tests/*.yml) pass and cover every rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, run

PROMETHEUS = DEPLOY / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules(kind: str) -> set[str]:
    return {
        rule[kind]
        for path in RULE_FILES
        for group in load(path)["groups"]
        for rule in group["rules"]
        if kind in rule
    }


def test_rule_files_pass_check_and_lint() -> None:
    result = run("promtool", "check", "rules", "--lint=all", "--lint-fatal", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-k8s.yml"])
def test_configs_are_valid(config: str) -> None:
    result = run("promtool", "check", "config", PROMETHEUS / config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert TEST_FILES
    result = run("promtool", "test", "rules", *TEST_FILES, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_cover_every_rule() -> None:
    tested_exprs: list[str] = []
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        document = load(path)
        loaded = {(path.parent / name).resolve() for name in document["rule_files"]}
        assert loaded <= {p.resolve() for p in RULE_FILES}, path
        for group in document["tests"]:
            tested_exprs += [
                case["expr"] for case in group.get("promql_expr_test", []) if case["exp_samples"]
            ]
            for case in group.get("alert_rule_test", []):
                (firing if case["exp_alerts"] else silent).add(case["alertname"])
    records = rules("record")
    untested = {name for name in records if not any(name in expr for expr in tested_exprs)}
    assert not untested, f"recording rules without a promql_expr_test: {sorted(untested)}"
    alerts = rules("alert")
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown silent"


def test_alerts_carry_the_labels_alertmanager_routes_by() -> None:
    for path in RULE_FILES:
        for group in load(path)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
                    assert rule["labels"]["team"] in ("upsell", "platform"), rule["alert"]
                    assert {"summary", "description"} <= set(rule["annotations"])
