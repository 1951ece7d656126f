"""`kafka start` takes ports from 1024 to 65535 for every node, unless asked for less."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app import cli


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("UPSELL_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("address", "brokers", "says"),
    [
        ("127.0.0.1:1", 1, "port 1 is below 1024 (privileged, needs root)"),
        ("127.0.0.1:1023", 1, "port 1023 is below 1024"),
        ("[::1]:80", 3, "port 80 is below 1024"),
        ("127.0.0.1:65535", 1, "port 65535 is unusable (the controller takes port + 1)"),
        ("127.0.0.1:65531", 3, "3 brokers from port 65531 need ports up to 65536"),
        ("127.0.0.1:65000", 10, "--brokers takes 1 to 9"),
    ],
)
def test_ports_that_do_not_fit_are_one_line_errors_with_exit_code_2(
    environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    address: str,
    brokers: int,
    says: str,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", address)
    assert cli.main(["kafka", "start", "--brokers", str(brokers)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("upsell-stream kafka: ")
    assert says in captured.err
    assert captured.err.count("\n") == 1
    assert not (environment / "kafka").exists()  # nothing was prepared, let alone started


def test_a_privileged_port_error_says_how_to_ask_for_it(
    environment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert cli.main(["kafka", "start"]) == 2
    assert "--allow-privileged-port" in capsys.readouterr().err


def test_the_first_and_last_ports_that_fit_pass_the_check(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_app.settings import Settings
    from stream_app.tools import local_kafka

    started: list[int] = []

    def refuse_to_start(*args: object, **kwargs: object) -> list[object]:
        # Past every check of the address: stop before anything is prepared.
        started.append(1)
        raise local_kafka.LocalKafkaError("not started in a unit test")

    monkeypatch.setattr(local_kafka.BrokerPaths, "nodes", refuse_to_start)
    for address, brokers, allow in (
        ("127.0.0.1:1024", 1, False),
        ("127.0.0.1:65534", 1, False),
        ("127.0.0.1:65530", 3, False),
        ("127.0.0.1:80", 1, True),
    ):
        settings = Settings.from_env(
            {"KAFKA_BOOTSTRAP_SERVERS": address, "UPSELL_DATA_DIR": str(environment)}
        )
        assert local_kafka.run("start", settings, brokers, allow_privileged_port=allow) == 1
    assert len(started) == 4
