"""The real local broker for the end-to-end tests, started with the project's own command."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import BROKER, CLI


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("broker")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": BROKER, "UPSELL_DATA_DIR": str(data_dir)}
    started = subprocess.run(
        [*CLI, "kafka", "start"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"could not start the local broker:\n{started.stdout}\n{started.stderr}")
    yield BROKER
    subprocess.run([*CLI, "kafka", "stop"], env=env, timeout=120, check=False)


@pytest.fixture
def data_dir(tmp_path: Path, broker: str) -> Path:
    return tmp_path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
