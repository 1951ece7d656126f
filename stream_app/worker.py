"""`upsell-stream worker`: create the topics, then run the Faust worker until a signal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream_app.faust_app import create_app
from stream_app.metrics import build_registry
from stream_app.settings import Settings
from stream_app.topics import ensure_topics

_EXPOSITION_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"


def run(settings: Settings) -> int:
    try:
        ensure_topics(settings)
    except Exception as error:  # one clear line instead of a trace
        print(f"upsell-stream worker: {error}", file=sys.stderr)
        return 1
    import faust

    app = create_app(settings)
    pipeline = app.pipeline
    registry = build_registry(pipeline)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp takes the charset separately from the content type.
        return web.bytes(generate_latest(registry), content_type=_EXPOSITION_TYPE)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({
            "status": "ok",
            "partitions": sorted(pipeline.partitions),
            "boards": sorted(pipeline.boards),
            "events_in": pipeline.events_in,
        })

    loglevel = os.environ.get("UPSELL_LOG_LEVEL", "info")
    logging.getLogger("faust").setLevel(logging.INFO)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()  # exits the process when the worker stops
