"""deploy/k8s: the manifests fit together and their settings are ones the worker accepts."""

from __future__ import annotations

from typing import Any

import yaml

from stream_app.settings import Settings
from tests.deploy.tools import DEPLOY

K8S = DEPLOY / "k8s"


def manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / name).read_text(encoding="utf-8"))
    return loaded


def test_settings_and_credentials_are_valid_for_the_worker() -> None:
    env = {
        **manifest("configmap.yaml")["data"],
        **{
            k: v
            for k, v in manifest("secret.example.yaml")["stringData"].items()
            if k.startswith("KAFKA_")
        },
    }
    settings = Settings.from_env(env)
    assert settings.security.protocol == "SASL_SSL"
    assert settings.web_host == "0.0.0.0"  # scraped from other pods
    # Credentials come from the Secret only.
    assert not {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"} & set(
        manifest("configmap.yaml")["data"]
    )


def test_deployment_service_and_scrape_discovery_agree() -> None:
    deployment, service = manifest("deployment.yaml"), manifest("service.yaml")
    monitor = manifest("servicemonitor.yaml")
    config = manifest("configmap.yaml")
    assert deployment["spec"]["replicas"] > 1
    assert deployment["spec"]["replicas"] <= int(config["data"]["UPSELL_PARTITIONS"])
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    # Headless: DNS lists every pod, each scraped on its own.
    assert service["spec"]["clusterIP"] == "None"
    (container,) = pod["spec"]["containers"]
    port = str(container["ports"][0]["containerPort"])
    assert (
        port
        == config["data"]["UPSELL_WEB_PORT"]
        == pod["metadata"]["annotations"]["prometheus.io/port"]
    )
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert sources == {
        config["metadata"]["name"],
        manifest("secret.example.yaml")["metadata"]["name"],
    }
    kustomization = manifest("kustomization.yaml")
    assert "secret.example.yaml" not in kustomization["resources"]
