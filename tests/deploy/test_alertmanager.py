"""deploy/alertmanager: the config loads and routes alerts by team, severity and channel."""

from __future__ import annotations

import pytest

from tests.deploy.tools import DEPLOY, run

CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def test_config_is_valid() -> None:
    result = run("amtool", "check-config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "UpsellRateDrop", "team": "upsell", "channel": "email"}, "crm-messaging"),
        ({"alertname": "UpsellRateDrop", "team": "upsell", "channel": "sms"}, "crm-messaging"),
        ({"alertname": "UpsellRateDrop", "team": "upsell", "channel": "push"}, "crm-messaging"),
        (
            {"alertname": "UpsellInStreamRateDrop", "team": "upsell", "channel": "in_app"},
            "digital-product",
        ),
        ({"alertname": "UpsellRateDrop", "team": "upsell", "channel": "web"}, "digital-product"),
        (
            {"alertname": "UpsellRateDrop", "team": "upsell", "channel": "call_center"},
            "call-center-ops",
        ),
        (
            {"alertname": "UpsellRateDrop", "team": "upsell", "channel": "__all__"},
            "upsell-analytics",
        ),
        ({"alertname": "UpsellRateDrop", "team": "upsell", "channel": "kiosk"}, "upsell-analytics"),
        (
            {"alertname": "UpsellWorkerDown", "team": "platform", "severity": "critical"},
            "platform-oncall",
        ),
        (
            {"alertname": "UpsellHighRejectRate", "team": "platform", "severity": "warning"},
            "platform-tickets",
        ),
    ],
)
def test_routing(labels: dict[str, str], receiver: str) -> None:
    result = run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        *(f"{name}={value}" for name, value in labels.items()),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver
