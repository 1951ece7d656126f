"""docs/configuration.md has a row for every setting, and names no variable the service
does not read."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from stream_app.settings import ENVIRONMENT, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# A table row that documents a variable starts with its name in backticks.
_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.MULTILINE)
_SERVICE_VARIABLE = re.compile(r"\b(?:UPSELL|KAFKA)_[A-Z0-9_]+\b")
# Read by from_env only to find the user's home when XDG_CACHE_HOME is unset.
_NOT_SETTINGS = {"HOME"}


class _RecordingEnvironment(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _variables_read() -> set[str]:
    environment = _RecordingEnvironment()
    Settings.from_env(environment)
    return environment.asked - _NOT_SETTINGS


def _documented_rows() -> set[str]:
    return set(_ROW.findall(DOC.read_text(encoding="utf-8")))


def test_the_recording_sees_what_from_env_reads() -> None:
    read = _variables_read()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "UPSELL_GRACE", "UPSELL_DEMO_INFO"} <= read
    assert "UPSELL_TEST_BROKER" not in read


def test_every_setting_in_the_environment_table_has_a_row() -> None:
    missing = set(ENVIRONMENT) - _documented_rows()
    assert not missing, f"docs/configuration.md lacks a row for {sorted(missing)}"


def test_every_variable_from_env_reads_has_a_row() -> None:
    missing = _variables_read() - _documented_rows()
    assert not missing, f"docs/configuration.md lacks a row for {sorted(missing)}"


def test_the_doc_names_only_variables_the_settings_read() -> None:
    named = set(_SERVICE_VARIABLE.findall(DOC.read_text(encoding="utf-8")))
    unknown = named - _variables_read() - set(ENVIRONMENT)
    assert not unknown, f"docs/configuration.md names {sorted(unknown)}, which settings never read"
