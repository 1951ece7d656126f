"""`upsell-stream worker`: create the topics, then run the Faust worker until a signal."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import faust

from stream_app.runtime import faust_internals
from stream_app.runtime.faust_app import create_app
from stream_app.runtime.gc_tuning import tune_collector
from stream_app.runtime.topics import ensure_topics
from stream_app.serving.metrics import build_registry
from stream_app.serving.read_model import ReadModel
from stream_app.serving.web import register
from stream_app.settings import Settings

# A stop still under way by then is stuck. With Kafka unreachable, aiokafka's fetcher
# raises CancelledError while the consumer thread closes it, that thread dies, and Faust's
# worker waits for it for good. Under Kubernetes' default grace period of 30 s, so that
# the worker ends itself, saying why, before it is killed.
STOP_TIMEOUT_S = 20.0


class Worker(faust.Worker):
    """Faust's worker, with a deadline on stopping after SIGINT or SIGTERM, and without
    Faust's start-up spinner."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # At log level warn or above, Faust's spinner sets the root logger to DEBUG for
        # good (it spins on every record), so every debug call of aiokafka, Faust and mode
        # builds a record that no handler prints: about 1 % of a loaded worker's CPU.
        self.spinner = None

    def _schedule_shutdown(self, signal: Any) -> None:
        # mode's Worker calls this for every stop signal; the first one starts the stop.
        if not faust_internals.stop_signalled(self):
            deadline = threading.Timer(STOP_TIMEOUT_S, _stop_now)
            deadline.daemon = True
            deadline.start()
        super()._schedule_shutdown(signal)


def _stop_now() -> None:
    # Sound at any moment: outputs and state are flushed before offsets are committed, so
    # a worker ended anywhere restarts exact (tests/e2e/test_crash_kill9.py).
    print(
        f"upsell-stream worker: still stopping {STOP_TIMEOUT_S:.0f} s after the signal "
        "(is Kafka reachable?); exiting now. Nothing committed is lost: a restart "
        "resumes from the committed offsets and the changelog.",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)


def run(settings: Settings) -> int:
    try:
        ensure_topics(settings)
    except Exception as error:  # one clear line instead of a trace
        print(f"upsell-stream worker: {error}", file=sys.stderr)
        return 1
    tune_collector()
    app = create_app(settings)
    try:
        # Faust makes only the last level of its directory (UPSELL_DATA_DIR/worker).
        app.conf.datadir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"upsell-stream worker: cannot create {app.conf.datadir}: {error}", file=sys.stderr)
        return 1
    model = ReadModel(app.pipeline)
    register(app, model, build_registry(model), app.recovery_status)
    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()  # exits the process when the worker stops
