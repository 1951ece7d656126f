"""docker-compose.yml: the monitoring stack is wired to the repository's deploy/ files."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.tools import DEPLOY, ROOT


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_mounted_file_exists() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)


def test_prometheus_alertmanager_and_grafana_find_each_other() -> None:
    services = compose()["services"]
    assert {"prometheus", "alertmanager", "grafana"} <= set(services)
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (target,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target == "alertmanager:9093"
    assert "9093:9093" in services["alertmanager"]["ports"][0]
    assert services["grafana"]["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= mounts
