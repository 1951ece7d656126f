"""Every command against a broker that requires SASL/SCRAM, credentials from the
environment only: the work is done, a wrong password ends each command with one clear
line, the password shows nowhere, and the web server listens on loopback only.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import Deployment, deployment, wait_until
from tests.e2e.resilience import OwnBroker, offers_counted, own_broker

USER = "upsell-app"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    """A local broker of its own whose only client listener is SASL_PLAINTEXT."""
    with own_broker(
        tmp_path_factory.mktemp("sasl-broker"),
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        KAFKA_SASL_USERNAME=USER,
        KAFKA_SASL_PASSWORD=f"pw-{secrets.token_hex(12)}",
    ) as broker:
        yield broker


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_everything_works_over_sasl_and_the_password_shows_nowhere(
    sasl_broker: OwnBroker, tmp_path: Path
) -> None:
    env = sasl_broker.env
    password = env["KAFKA_SASL_PASSWORD"]
    assert "UPSELL_WEB_HOST" not in os.environ, "the loopback default is what is checked"
    seen: list[str] = []
    with deployment(tmp_path, extra_env={**env, "UPSELL_LOG_LEVEL": "info"}) as service:
        created = service.cli("topics", "create")
        seen += [created.stdout, created.stderr]
        assert created.returncode == 0, created.stderr
        port = service.start_worker()
        truth_file = tmp_path / "truth.json"
        simulated = service.cli(
            "simulate", "--count", "400", "--seed", "5", "--truth-file", str(truth_file)
        )
        seen += [simulated.stdout, simulated.stderr]
        assert simulated.returncode == 0, simulated.stderr
        truth = json.loads(truth_file.read_text())
        offers = sum(truth["offers_presented"].values())
        wait_until(
            lambda: offers_counted(service.metrics()) == offers,
            180,
            "the worker to count every offer over SASL",
        )

        # The web server listens on loopback only, unless UPSELL_WEB_HOST says otherwise.
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, little-endian hex
        for page in ("/metrics", "/healthz", "/"):
            seen.append(requests.get(f"http://127.0.0.1:{port}{page}", timeout=10).text)

        # Wrong password: each command says so in one line, and names no password.
        wrong = {**env, "KAFKA_SASL_PASSWORD": f"not-{password}"}
        refused = Deployment(tmp_path, extra_env=wrong, name=service.name)
        for command in (("topics", "create"), ("simulate", "--count", "10"), ("worker",)):
            result = refused.cli(*command, timeout=120)
            seen += [result.stdout, result.stderr]
            lines = result.stderr.strip().splitlines()
            assert result.returncode != 0, command
            assert len(lines) == 1, (command, result.stderr)
            assert "refused the login of user 'upsell-app'" in lines[0], lines[0]
            assert "KAFKA_SASL_PASSWORD" in lines[0]
            assert wrong["KAFKA_SASL_PASSWORD"] not in lines[0]
        service.stop_all()
        seen += [log.read_text(errors="replace") for log in tmp_path.glob("*-worker-*.log")]
    seen += [*sasl_broker.printed, sasl_broker.log]
    broker_dir = sasl_broker.data_dir / "kafka"
    assert all(password not in text for text in seen)
    assert all(f"not-{password}" not in text for text in seen)
    # The one file that must hold it, the broker's own configuration, is private.
    assert broker_dir.joinpath("server.properties").stat().st_mode & 0o077 == 0
