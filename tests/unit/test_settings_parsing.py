"""Malformed settings: every variable either parses or stops with one SettingsError line
naming it (never another exception), and every command prints that line, no traceback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stream_app.settings as settings_module
from stream_app.settings import MAX_DURATION_MS, Settings, SettingsError

# Every variable settings.py reads, taken from its source so that new ones are covered too.
VARIABLES = sorted(
    set(re.findall(r'"((?:UPSELL|KAFKA)_[A-Z_]+)"', Path(settings_module.__file__).read_text()))
)
CLI = [sys.executable, "-m", "stream_app.cli"]
# Superscripts, Arabic-Indic, fullwidth, NKo and mathematical digits.
NOT_ASCII_DIGITS = ["²", "\u0663", "\uff11\uff12", "\u07c1", "\U0001d7d7", "³0"]


def test_the_source_names_the_documented_variables() -> None:
    # A guard on the regex above: it must find the variables, not an empty list.
    assert {
        "UPSELL_WEB_PORT",
        "UPSELL_WINDOWS",
        "UPSELL_BANDS",
        "UPSELL_PARTITIONS",
        "UPSELL_DROP_SIGNIFICANCE",
        "KAFKA_BOOTSTRAP_SERVERS",
    } <= set(VARIABLES)


def outcome(env: dict[str, str]) -> Settings | SettingsError:
    try:
        return Settings.from_env(env)
    except SettingsError as error:
        return error


def assert_one_line_naming(error: Settings | SettingsError, variable: str) -> None:
    assert isinstance(error, SettingsError), f"{variable} accepted a malformed value"
    message = str(error)
    assert variable in message and "\n" not in message and "\r" not in message, message
    assert len(message) < 400, message


@settings(max_examples=60, deadline=None)
@given(variable=st.sampled_from(VARIABLES), value=st.text(max_size=60))
def test_any_text_in_any_variable_parses_or_raises_settings_error(
    variable: str, value: str
) -> None:
    result = outcome({variable: value})  # any other exception fails the test
    if isinstance(result, SettingsError):
        assert "\n" not in str(result) and "\r" not in str(result)


@settings(max_examples=60, deadline=None)
@given(
    value=st.one_of(
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=12),
        st.text(alphabet="0123456789.,eE+-[] ms", max_size=20),
    )
)
def test_number_like_text_in_number_variables_never_escapes(value: str) -> None:
    for variable in (
        "UPSELL_WEB_PORT",
        "UPSELL_PARTITIONS",
        "UPSELL_GRACE",
        "UPSELL_WINDOWS",
        "UPSELL_BANDS",
        "UPSELL_LOYALTY_BANDS",
        "UPSELL_DROP_SIGNIFICANCE",
        "UPSELL_IDLE_ADVANCE",
        "UPSELL_MAX_LABEL_VALUES",
    ):
        result = outcome({variable: value})
        if isinstance(result, SettingsError):
            assert_one_line_naming(result, variable)


@pytest.mark.parametrize(
    "value",
    [
        *NOT_ASCII_DIGITS,
        "1e3",
        "1.0",
        "nan",
        "inf",
        "-1",
        "0",
        "+5",
        "0x10",
        "1_000",
        "65536",
        "9" * 5000,
    ],
)
def test_malformed_port(value: str) -> None:
    assert_one_line_naming(outcome({"UPSELL_WEB_PORT": value}), "UPSELL_WEB_PORT")


@pytest.mark.parametrize(
    "variable",
    [
        "UPSELL_PARTITIONS",
        "UPSELL_BATCH_MAX_RECORDS",
        "UPSELL_MAX_LABEL_VALUES",
        "UPSELL_DROP_MIN_OFFERS",
        "UPSELL_DROP_BASELINE_WINDOWS",
    ],
)
@pytest.mark.parametrize(
    "value", [*NOT_ASCII_DIGITS, "1e3", "2.5", "nan", "-3", "0", str(2**31), "9" * 5000]
)
def test_malformed_whole_numbers(variable: str, value: str) -> None:
    assert_one_line_naming(outcome({variable: value}), variable)


@pytest.mark.parametrize(
    "variable",
    [
        "UPSELL_GRACE",
        "UPSELL_ATTRIBUTION_WINDOW",
        "UPSELL_WINDOWS",
        "UPSELL_IDLE_ADVANCE",
        "UPSELL_SESSION_TIMEOUT",
        "UPSELL_DROP_AGE",
    ],
)
@pytest.mark.parametrize(
    "value", ["\u0663m", "²s", "1e3s", "1.5m", "-5m", "5", "m", "nan", "9" * 5000 + "s", "3660001d"]
)
def test_malformed_durations(variable: str, value: str) -> None:
    assert_one_line_naming(outcome({variable: value}), variable)


@pytest.mark.parametrize("value", [",", "5m,", "5m,,1h", "5m,5m", "5m,300s", "0s", "\u0665m"])
def test_malformed_window_lists(value: str) -> None:
    assert_one_line_naming(outcome({"UPSELL_WINDOWS": value}), "UPSELL_WINDOWS")


@pytest.mark.parametrize(
    "value",
    [
        "[]",
        ",",
        "[,]",
        "nan,0.1,0.2",
        "0.05,0.1,inf",
        "0.1,0.05,0.2",
        "0.05,0.1",
        "0.05,0.1,0.2,0.3",
        "0.05,0.1,1e3",
        "\u0660.\u0660\u0665,0.1,0.2",
        "0.05;0.1;0.2",
    ],
)
def test_malformed_band_lists(value: str) -> None:
    assert_one_line_naming(outcome({"UPSELL_BANDS": value}), "UPSELL_BANDS")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("UPSELL_DROP_SIGNIFICANCE", "nan"),
        ("UPSELL_DROP_SIGNIFICANCE", "0"),
        ("UPSELL_DROP_SIGNIFICANCE", "\u0660.\u0661"),
        ("UPSELL_DROP_SIGNIFICANCE", "1e3"),
        ("UPSELL_DROP_MIN_RELATIVE", "inf"),
        ("UPSELL_DROP_MIN_RELATIVE", "1"),
        ("UPSELL_DROP_MIN_RELATIVE", "0,2"),
        ("KAFKA_BOOTSTRAP_SERVERS", "host:²"),
        ("KAFKA_BOOTSTRAP_SERVERS", "host:70000"),
        ("KAFKA_BOOTSTRAP_SERVERS", "a:1,,b:2"),
        ("KAFKA_BOOTSTRAP_SERVERS", "a b:1"),
        ("UPSELL_APP_ID", "my app"),
        ("UPSELL_APP_ID", "a" * 201),
        ("UPSELL_TOPIC_OFFERS", "offers/in"),
        ("UPSELL_TOPIC_RATES", ".."),
        ("UPSELL_TOPIC_KPIS", "k" * 250),
        ("UPSELL_WEB_HOST", "local host"),
        ("UPSELL_LOG_LEVEL", "verbose"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("UPSELL_INSTANCE_ID", "worker 1"),
        ("UPSELL_INSTANCE_ID", "w" * 250),
    ],
)
def test_other_malformed_values(variable: str, value: str) -> None:
    assert_one_line_naming(outcome({variable: value}), variable)


def test_well_formed_values_still_parse() -> None:
    parsed = Settings.from_env(
        {
            "UPSELL_WEB_PORT": "65535",
            "UPSELL_PARTITIONS": "012",
            "UPSELL_WINDOWS": " 90s, 1h ",
            "UPSELL_BANDS": "[0.05, .1, 2e-1]",
            "UPSELL_DROP_SIGNIFICANCE": "1e-5",
            "UPSELL_DROP_MIN_RELATIVE": "0.3",
            "UPSELL_GRACE": "3660000d",
            "UPSELL_ATTRIBUTION_WINDOW": "1d",
            "KAFKA_BOOTSTRAP_SERVERS": "[::1]:9092,kafka-1.internal:19092,10.0.0.7",
            "UPSELL_APP_ID": "team.upsell_stream-2",
            "UPSELL_WEB_HOST": "::",
            "UPSELL_INSTANCE_ID": "pod-3.upsell:a_b",
        }
    )
    assert parsed.web_port == 65535 and parsed.partitions == 12
    assert [size.ms for size in parsed.windows] == [90_000, 3_600_000]
    assert parsed.bands == (0.05, 0.1, 0.2)
    assert parsed.drops.significance == 1e-5 and parsed.drops.min_relative_drop == 0.3
    assert parsed.grace_ms == MAX_DURATION_MS == 3_660_000 * 86_400_000
    assert parsed.bootstrap_servers == "[::1]:9092,kafka-1.internal:19092,10.0.0.7"
    assert parsed.instance_id == "pod-3.upsell:a_b"


def test_the_instance_id_is_the_host_and_web_port_unless_set_or_off() -> None:
    """Two workers at once on one host differ by port; a worker restarted in its place
    gets its predecessor's id, and so its place in the group."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())
    assert Settings.from_env({"UPSELL_WEB_PORT": "7001"}).instance_id == f"{host}:7001"
    assert Settings.from_env({"UPSELL_INSTANCE_ID": "OFF"}).instance_id is None


COMMANDS = [
    ["worker"],
    ["simulate", "--count", "1"],
    ["topics", "create"],
    ["kafka", "start"],
    ["kafka", "stop"],
    ["kafka", "status"],
    ["rates"],
    ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_prints_one_line_and_exits_2(command: list[str], tmp_path: Path) -> None:
    # An unreachable broker and a scratch data dir: should the setting be accepted by
    # mistake, nothing is started and nothing is touched.
    env = {
        **os.environ,
        "UPSELL_WEB_PORT": "²",
        "UPSELL_DATA_DIR": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
    }
    done = subprocess.run(
        [*CLI, *command], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.splitlines() == [
        "upsell-stream: UPSELL_WEB_PORT: '²' is not a positive whole number from 1 to 65535"
    ]
    assert done.stdout == ""
