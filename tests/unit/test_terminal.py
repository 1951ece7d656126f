"""`upsell-stream rates` output: full values when piped, fitted to a terminal."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from stream_app.tools.terminal import render, render_plain

LONG_CHANNEL = "partner-marketplace-affiliate-network-europe"
LONG_SEGMENT = "returning-high-value-loyalty-programme-members"


def _document() -> dict[str, Any]:
    row = {
        "channel": LONG_CHANNEL,
        "segment": LONG_SEGMENT,
        "offers": 1234,
        "conversions": 150,
        "rate": 0.12155,
        "band": "good",
        "aov_uplift": 22.04,
    }
    other = {
        "channel": "email",
        "segment": "[new]",
        "offers": 10,
        "conversions": 0,
        "rate": 0.0,
        "band": "low",
        "aov_uplift": None,
    }
    return {
        "view": "channel_segment",
        "window": "5m",
        "dimensions": ["channel", "segment"],
        "stream_time": "2026-11-22T10:04:00.000Z",
        "windows": [
            {"window_start": "2026-11-22T09:55:00.000Z", "current": False, "rows": []},
            {"window_start": "2026-11-22T10:00:00.000Z", "current": True, "rows": [row, other]},
        ],
    }


def test_piped_output_is_tab_separated_with_every_value_in_full() -> None:
    lines = render_plain(_document()).splitlines()
    assert lines[0] == "# channel_segment · window 5m from 2026-11-22T10:00:00.000Z (current)"
    assert lines[1] == "# stream time 2026-11-22T10:04:00.000Z"
    assert lines[2].split("\t") == [
        "channel",
        "segment",
        "offers",
        "conversions",
        "rate",
        "band",
        "aov_uplift",
    ]
    assert lines[3].split("\t") == [
        LONG_CHANNEL,
        LONG_SEGMENT,
        "1234",
        "150",
        "12.2%",
        "good",
        "22.04",
    ]
    assert lines[4].split("\t") == ["email", "[new]", "10", "0", "0.0%", "low", "-"]
    assert len(lines) == 5


def test_a_narrow_terminal_folds_long_names_instead_of_cutting_them() -> None:
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=True, color_system=None).print(render(_document()))
    shown = out.getvalue()
    assert all(len(line) <= 80 for line in shown.splitlines())
    # Folded over lines: every character of each name is there, in order.
    cells = "".join(
        line.split("│")[1].strip() for line in shown.splitlines() if line.count("│") >= 3
    )
    assert LONG_CHANNEL in cells
    assert "[new]" in shown  # a value, not markup
