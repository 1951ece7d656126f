"""The worker's HTTP interface: /metrics, /healthz, the JSON query API and the live page.

`rates_document` builds the API's answer from the same board and the same `figures()`
that the output topics and the metrics use, so all three always agree.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.registry import CollectorRegistry

from stream_app.domain.board import RatesBoard
from stream_app.domain.demo_source import DemoSource, SourceError
from stream_app.domain.drops import FIRED
from stream_app.domain.rates import figures
from stream_app.domain.totals import DUPLICATES_TOTAL, LATE_TOTAL, REJECTED_TOTAL
from stream_app.domain.views import VIEW_BY_NAME, View
from stream_app.domain.windows import is_closed, rfc3339, window_start
from stream_app.serving.exposition import ExpositionWriter
from stream_app.serving.read_model import ReadModel
from stream_app.stages.publish import ActiveAlert

log = logging.getLogger(__name__)

# aiohttp takes the charset apart from the content type.
_EXPOSITION_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
RECENT_WINDOWS = 12
MAX_WINDOWS = 500
_PARAMETERS = ("view", "window", "windows")
_WINDOW_COUNT = re.compile(r"[1-9][0-9]{0,2}")
# The page and its assets: only the page's own files run or load, nothing inline, no
# framing; producer values are rendered as text (app.js), this is the second line of
# defence. nosniff: a browser never runs a JSON answer as a script.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class BadRequest(ValueError):
    """A query the API cannot answer; the message says what to send instead."""


class Throughput:
    """Events per second over the last minute, from samples of a running count."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=120)

    def sample(self, count: int, now: float) -> float | None:
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[0][0] > 60:
            self._samples.popleft()
        first_at, first = self._samples[0]
        return (count - first) / (now - first_at) if now > first_at else None


def parse_query(
    pairs: Iterable[tuple[str, str]], window_labels: Sequence[str]
) -> tuple[View, str, int]:
    """The view, window size and number of windows a query asks for, or BadRequest.

    Strict: only the known parameters, each at most once, a known view and size, and the
    number of windows in ASCII digits (str.isdigit and int accept other scripts' digits).
    """
    query: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PARAMETERS:
            raise BadRequest(
                f"unknown parameter {_shown(name)}; the API takes {', '.join(_PARAMETERS)}"
            )
        if name in query:
            raise BadRequest(f"parameter {name} is given more than once")
        query[name] = value
    view_name = query.get("view", "channel_segment")
    view = VIEW_BY_NAME.get(view_name)
    if view is None:
        raise BadRequest(f"view {_shown(view_name)} is not one of {', '.join(VIEW_BY_NAME)}")
    label = query.get("window", window_labels[0])
    if label not in window_labels:
        raise BadRequest(
            f"window {_shown(label)} is not a configured size ({', '.join(window_labels)})"
        )
    count = query.get("windows", str(RECENT_WINDOWS))
    if _WINDOW_COUNT.fullmatch(count) is None or int(count) > MAX_WINDOWS:
        raise BadRequest(f"windows {_shown(count)} must be a whole number from 1 to {MAX_WINDOWS}")
    return view, label, int(count)


def _shown(value: str) -> str:
    """A query value quoted on one line, cut short: error messages echo what was sent."""
    return repr(value if len(value) <= 40 else value[:40] + "…")


def rates_document(
    model: ReadModel,
    board: RatesBoard,
    view: View,
    label: str,
    count: int,
    health: dict[str, Any],
    source: DemoSource | None = None,
) -> dict[str, Any]:
    config = model.config
    size = config.size_ms(label)
    stream_time = board.stream_time
    starts = board.retained(view, label)
    current = None if stream_time is None else window_start(stream_time, size)
    windows = []
    for start in sorted(starts, reverse=True)[:count]:
        closed = is_closed(start + size, board.low_watermark, config.grace_ms)
        rows = []
        for key, vector in sorted(board.window(view, (label, start)).items()):
            row: dict[str, Any] = dict(zip(view.dimensions, key, strict=True))
            row.update(figures(view, key, vector, model.bands))
            rows.append(row)
        windows.append(
            {
                "window_start": rfc3339(start),
                "window_end": rfc3339(start + size),
                "current": start == current,
                "closed": closed,
                "final": False,  # a final window's record is published, then it is forgotten
                "rows": rows,
            }
        )
    return {
        "view": view.name,
        "window": label,
        "windows_available": model.window_labels,
        "dimensions": list(view.dimensions),
        "stream_time": None if stream_time is None else rfc3339(stream_time),
        "windows": windows,
        "alerts": [alert_document(alert) for alert in model.active_alerts()],
        "bands": {
            scale.scale: scale.lower_bounds()
            for scale in (model.bands.campaign, model.bands.loyalty)
        },
        "health": health,
        **({} if source is None else {"source": source.as_json()}),
    }


class DemoSourceFile:
    """The demo's description of what this worker watches (UPSELL_DEMO_INFO), read again
    whenever the file changes: the demo writes it once the simulator starts.

    Without it the page shows no description; a description that cannot be read is
    logged in one line and left out, it never stops the worker.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._seen: float | None = None
        self._source: DemoSource | None = None

    def current(self) -> DemoSource | None:
        if self._path is None:
            return None
        try:
            changed = self._path.stat().st_mtime
        except OSError:
            self._seen = self._source = None
            return None
        if changed != self._seen:
            self._seen, self._source = changed, self._read(self._path)
        return self._source

    @staticmethod
    def _read(path: Path) -> DemoSource | None:
        try:
            return DemoSource.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:  # SourceError and JSONDecodeError included
            reason = str(error) if isinstance(error, SourceError) else type(error).__name__
            log.warning("UPSELL_DEMO_INFO %s: %s; the page shows no demo description", path, reason)
            return None


def alert_document(alert: ActiveAlert) -> dict[str, Any]:
    """The fired record of the alerts topic; its series alone when it fired before the
    worker started (the rates and reason are then unknown here)."""
    if alert.fired is not None and alert.fired_at_ms is not None:
        return alert.fired.as_json(alert.fired_at_ms)
    return {"state": FIRED, "window": alert.label, "channel": alert.key[0], "segment": alert.key[1]}


def health_figures(model: ReadModel, throughput: Throughput, now: float) -> dict[str, Any]:
    """`now`: the monotonic clock, for the throughput."""
    totals = model.totals()
    return {
        "events_in": model.events_in,
        "events_per_second": throughput.sample(model.events_in, now),
        "rejected": sum(totals[REJECTED_TOTAL].values()),
        "late": sum(totals[LATE_TOTAL].values()),
        "duplicates": sum(totals[DUPLICATES_TOTAL].values()),
        "lag": sum(behind for _, behind in model.lag()),
        "partitions": model.customer_partitions(),
    }


def page_file(path: str) -> bytes:
    return (resources.files("stream_app.serving").joinpath("static", *path.split("/"))).read_bytes()


# URL name -> (file under static/, content type). uPlot is vendored, see its VERSION.
_STATIC_FILES = {
    "index.html": ("index.html", "text/html"),
    "app.js": ("app.js", "text/javascript"),
    "style.css": ("style.css", "text/css"),
    "uPlot.iife.min.js": ("vendor/uplot/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("vendor/uplot/uPlot.min.css", "text/css"),
}


class ExpositionCache:
    """The /metrics text, rendered again only once the pipeline changed, and not so often
    that rendering takes more than a share of the event loop.

    Rendering every series takes tens of milliseconds on the event loop that also runs the
    hot path; a scraper polling often (the latency benchmark reads every 10 ms, dashboards
    and several Prometheus servers add up) would stall the stream for most of each second.
    Between two batches the state is the same, so is the text: it is served again while
    `model.version` is unchanged, and never older than MAX_AGE_S as a safeguard.

    The version moves several times per batch (each stage), so a fast scraper alone would
    still have the text rendered a few times per batch, taking the CPU the batches need and
    delaying what /metrics shows by several batches. After a render taking d seconds, the
    next one waits until RENDER_SPACING x d has passed since it began, so rendering takes
    at most 1 / RENDER_SPACING of the loop whatever the scrapers do. The wait is capped at
    MAX_DELAY_S, so a scrape more than that after a change always shows it, however slow a
    render was on a loaded machine (a test or a user that waits for the group's lag to reach 0 and
    then reads /metrics once gets the final figures).
    """

    MAX_AGE_S = 1.0
    RENDER_SPACING = 4.0
    MAX_DELAY_S = 0.25

    def __init__(
        self,
        model: ReadModel,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._model = model
        self._writer = ExpositionWriter(registry)
        self._clock = clock
        self._text = b""
        self._version = -1
        self._rendered_at = 0.0
        self._next_render_at = 0.0

    def render(self) -> bytes:
        version = self._model.version
        now = self._clock()
        stale = now - self._rendered_at >= self.MAX_AGE_S
        if stale or (version != self._version and now >= self._next_render_at):
            self._text = self._writer.render()
            took = self._clock() - now
            self._version, self._rendered_at = version, now
            self._next_render_at = now + min(self.RENDER_SPACING * took, self.MAX_DELAY_S)
        return self._text


# How soon a client should ask again while the worker replays its changelogs.
RECOVERY_RETRY_AFTER_S = 2


def health_document(
    model: ReadModel, figures: dict[str, Any], recovery: dict[str, Any] | None
) -> dict[str, Any]:
    """/healthz: always HTTP 200 (a liveness probe must not kill a worker that replays its
    state); `status` is "recovering", with the replay's progress, until the state is
    loaded."""
    document: dict[str, Any] = {
        "status": "ok" if recovery is None else "recovering",
        "boards": model.board_partitions(),
        **figures,
    }
    if recovery is not None:
        document["recovery"] = recovery
    return document


def no_board_document(recovery: dict[str, Any] | None) -> dict[str, Any]:
    """/api/rates without a board here (HTTP 503, Retry-After while recovering): either the
    worker is replaying its changelogs, the board's among them or not yet known, or the
    board is held by another worker of the group."""
    if recovery is not None:
        return {
            "state": "recovering",
            "error": "this worker is restoring its state from the changelogs; ask again shortly",
            "progress": recovery,
        }
    return {
        "state": "not_held",
        "error": "this worker does not hold the rates board now; ask another worker of the group",
    }


def register(
    app: faust.App,
    model: ReadModel,
    registry: CollectorRegistry,
    recovery: Callable[[], dict[str, Any] | None] = lambda: None,
) -> None:
    """Add the pages to the Faust app's web server; `recovery` tells the progress of a
    recovery under way (None: none)."""
    throughput = Throughput()
    source = DemoSourceFile(model.demo_info)
    cache = ExpositionCache(model, registry)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(cache.render(), content_type=_EXPOSITION_TYPE)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        figures = health_figures(model, throughput, time.monotonic())
        return web.json(health_document(model, figures, recovery()))

    @app.page("/api/rates")
    async def api_rates(web: Any, request: Any) -> Any:
        try:
            view, label, count = parse_query(request.query.items(), model.window_labels)
        except BadRequest as error:
            return web.json({"error": str(error)}, status=400, headers=dict(SECURITY_HEADERS))
        boards = model.boards()
        if not boards:
            progress = recovery()
            headers = dict(SECURITY_HEADERS)
            if progress is not None:
                headers["Retry-After"] = str(RECOVERY_RETRY_AFTER_S)
            return web.json(no_board_document(progress), status=503, headers=headers)
        document = rates_document(
            model,
            boards[0],
            view,
            label,
            count,
            health_figures(model, throughput, time.monotonic()),
            source.current(),
        )
        return web.json(document, headers=dict(SECURITY_HEADERS))

    @app.page("/")
    async def index(web: Any, request: Any) -> Any:
        return web.bytes(
            page_file("index.html"), content_type="text/html", headers=dict(SECURITY_HEADERS)
        )

    @app.page("/static/{name}")
    async def static(web: Any, request: Any, name: str) -> Any:
        found = _STATIC_FILES.get(name)
        if found is None:
            return web.json(
                {"error": f"no file {_shown(name)}"}, status=404, headers=dict(SECURITY_HEADERS)
            )
        path, content_type = found
        return web.bytes(page_file(path), content_type=content_type, headers=dict(SECURITY_HEADERS))
