"""`upsell-stream worker`: create the topics, then run the Faust worker until a signal."""

from __future__ import annotations

import sys

from stream_app.faust_app import create_app
from stream_app.gc_tuning import tune_collector
from stream_app.metrics import build_registry
from stream_app.settings import Settings
from stream_app.topics import ensure_topics
from stream_app.web import register


def run(settings: Settings) -> int:
    try:
        ensure_topics(settings)
    except Exception as error:  # one clear line instead of a trace
        print(f"upsell-stream worker: {error}", file=sys.stderr)
        return 1
    import faust

    tune_collector()
    app = create_app(settings)
    register(app, app.pipeline, build_registry(app.pipeline))
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()  # exits the process when the worker stops
