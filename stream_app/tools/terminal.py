"""`upsell-stream rates`: the query API's numbers as a table in the terminal."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from stream_app.settings import Settings

_BAND_STYLE = {
    "low": "red",
    "moderate": "yellow",
    "good": "green",
    "healthy": "green",
    "excellent": "bold green",
    "exceptional": "bold green",
}


class ApiError(RuntimeError):
    """The worker's API could not answer; the message says why in one line."""


def fetch(settings: Settings, view: str | None, window: str | None) -> dict[str, Any]:
    query = {key: value for key, value in (("view", view), ("window", window)) if value}
    url = f"{settings.web_url}/api/rates?" + urllib.parse.urlencode(query)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - http, ours
            document: dict[str, Any] = json.load(response)
            return document
    except urllib.error.HTTPError as error:
        detail = json.loads(error.read() or b"{}").get("error", error.reason)
        raise ApiError(f"{url}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        raise ApiError(
            f"cannot reach a worker at {url} ({error}); is `upsell-stream worker` "
            "running with the same UPSELL_WEB_HOST/UPSELL_WEB_PORT?"
        ) from None


_RATES = ("rate", "customer_rate", "transaction_rate", "revenue_share", "buyer_rate")
_BANDED = ("rate", "transaction_rate")  # the headline rates a record's band belongs to


def _text(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column in _RATES:
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _cell(column: str, value: Any, band: str | None) -> str:
    text = escape(_text(column, value))
    style = _BAND_STYLE.get(band or "")
    return f"[{style}]{text}[/]" if style else text


def _shown(document: dict[str, Any]) -> tuple[str, list[str], list[dict[str, Any]]]:
    """The title, the columns and the rows of the window shown: the current one, or the
    first."""
    windows = document["windows"]
    shown = next((w for w in windows if w["current"]), windows[0] if windows else None)
    title = f"{document['view']} · window {document['window']}"
    if shown is not None:
        title += f" from {shown['window_start']}" + (" (current)" if shown["current"] else "")
    rows: list[dict[str, Any]] = shown["rows"] if shown else []
    columns = list(rows[0]) if rows else list(document["dimensions"])
    return title, columns, rows


def render(document: dict[str, Any]) -> Table:
    """A table for a terminal: rich fits it to the width, folding long names, not cutting."""
    title, columns, rows = _shown(document)
    table = Table(title=escape(title), caption=f"stream time {document['stream_time']}")
    for column in columns:
        dimension = column in document["dimensions"]
        table.add_column(
            column,
            justify="left" if dimension else "right",
            overflow="fold" if dimension else "ellipsis",
            no_wrap=not dimension,
        )
    for row in rows:
        band = row.get("band")
        table.add_row(
            *(_cell(column, row[column], band if column in _BANDED else None) for column in columns)
        )
    return table


def render_plain(document: dict[str, Any]) -> str:
    """For a pipe or a file: tab-separated, every value in full, no colours; the title
    and stream time on comment lines."""
    title, columns, rows = _shown(document)
    lines = [f"# {title}", f"# stream time {document['stream_time']}", "\t".join(columns)]
    lines += ["\t".join(_text(column, row[column]) for column in columns) for row in rows]
    return "\n".join(lines)


def run(settings: Settings, view: str | None, window: str | None, watch: bool) -> int:
    console = Console()
    try:
        if not console.is_terminal:
            return _print_plain(settings, view, window, watch)
        if not watch:
            console.print(render(fetch(settings, view, window)))
            return 0
        with Live(
            render(fetch(settings, view, window)), console=console, refresh_per_second=1
        ) as live:
            while True:
                time.sleep(2)
                live.update(render(fetch(settings, view, window)))
    except ApiError as error:
        console.print(f"upsell-stream rates: {error}", style="red", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and nothing to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _print_plain(settings: Settings, view: str | None, window: str | None, watch: bool) -> int:
    while True:
        print(render_plain(fetch(settings, view, window)), flush=True)
        if not watch:
            return 0
        time.sleep(2)
        print(flush=True)
