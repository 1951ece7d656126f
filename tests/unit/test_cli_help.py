"""Every command's --help names its options, the environment it reads and an example."""

from __future__ import annotations

import argparse

import pytest

from stream_app import cli
from stream_app.settings import ENVIRONMENT, Settings


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._build_parser()
    sub = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    return dict(sub.choices)


COMMANDS = sorted(_commands())


def test_every_command_is_covered() -> None:
    assert set(COMMANDS) == {"kafka", "worker", "demo", "rates", "topics", "simulate"}


@pytest.mark.parametrize("name", COMMANDS)
def test_help_names_each_option_with_help_the_environment_and_an_example(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = _commands()[name]
    with pytest.raises(SystemExit) as exited:
        cli.main([name, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for action in command._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name}: {action.dest} has no help"
        for flag in action.option_strings:
            assert flag in shown, f"{name} --help does not mention {flag}"
        if not action.option_strings and action.choices:  # an action word: each explained
            for choice in action.choices:
                assert choice in shown
    listed = [variable for variable in ENVIRONMENT if variable in shown]
    assert listed, f"{name} --help names no environment variable"
    assert "KAFKA_BOOTSTRAP_SERVERS" in shown or "UPSELL_WEB_PORT" in shown
    assert "example" in shown
    assert f"upsell-stream {name}" in shown.split("example")[-1]


def test_kafka_help_says_what_start_stop_and_status_do(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["kafka", "--help"])
    shown = capsys.readouterr().out
    assert "start   download Kafka once" in shown
    assert "stop    stop it" in shown
    assert "status  say whether it runs" in shown


def test_the_environment_table_names_every_variable_the_settings_read() -> None:
    read: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            read.add(key)
            return super().get(key, default)

    Settings.from_env(Recording())
    assert read - {"HOME"} == set(ENVIRONMENT)
