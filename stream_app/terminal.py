"""`upsell-stream rates`: the query API's numbers as a table in the terminal."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from stream_app.settings import Settings

_BAND_STYLE = {"low": "red", "moderate": "yellow", "good": "green", "healthy": "green",
               "excellent": "bold green", "exceptional": "bold green"}


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
        raise ApiError(f"cannot reach a worker at {url} ({error}); is `upsell-stream worker` "
                       "running with the same UPSELL_WEB_HOST/UPSELL_WEB_PORT?") from None


_RATES = ("rate", "customer_rate", "transaction_rate", "revenue_share", "buyer_rate")
_BANDED = ("rate", "transaction_rate")  # the headline rates a record's band belongs to


def _cell(column: str, value: Any, band: str | None) -> str:
    if value is None:
        return "-"
    if column in _RATES:
        text = f"{100 * value:.1f}%"
    elif isinstance(value, float):
        text = f"{value:,.2f}"
    else:
        text = str(value)
    style = _BAND_STYLE.get(band or "")
    return f"[{style}]{text}[/]" if style else text


def render(document: dict[str, Any]) -> Table:
    windows = document["windows"]
    shown = next((w for w in windows if w["current"]), windows[0] if windows else None)
    title = f"{document['view']} · window {document['window']}"
    if shown is not None:
        title += f" from {shown['window_start']}" + (" (current)" if shown["current"] else "")
    table = Table(title=title, caption=f"stream time {document['stream_time']}")
    rows = shown["rows"] if shown else []
    columns = list(rows[0]) if rows else list(document["dimensions"])
    for column in columns:
        table.add_column(column, justify="left" if column in document["dimensions"] else "right")
    for row in rows:
        band = row.get("band")
        table.add_row(*(_cell(column, row[column], band if column in _BANDED else None)
                        for column in columns))
    return table


def run(settings: Settings, view: str | None, window: str | None, watch: bool) -> int:
    console = Console()
    try:
        if not watch:
            console.print(render(fetch(settings, view, window)))
            return 0
        with Live(render(fetch(settings, view, window)), console=console,
                  refresh_per_second=1) as live:
            while True:
                time.sleep(2)
                live.update(render(fetch(settings, view, window)))
    except ApiError as error:
        console.print(f"upsell-stream rates: {error}", style="red", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 0
