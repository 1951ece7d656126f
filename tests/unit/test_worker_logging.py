"""At log level warn, the worker leaves the root logger at warn: Faust's spinner would set
it to DEBUG for good, so that every debug call of the libraries built a record."""

from __future__ import annotations

import asyncio
import logging

import faust

from stream_app.runtime.worker import Worker


def configured_level(worker_class: type[faust.Worker]) -> int:
    """The level a logger configured at WARN has after the worker's root-logger hook."""

    async def configure() -> int:
        app = faust.App("logging-probe", broker="kafka://127.0.0.1:1", store="memory://")
        worker = worker_class(app, loglevel="warn", quiet=True)
        logger = logging.Logger("probe", logging.WARN)
        logger.addHandler(logging.NullHandler())
        worker.on_setup_root_logger(logger, logging.WARN)
        return logger.level

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(configure())
    finally:
        loop.close()


def test_the_worker_keeps_the_configured_level() -> None:
    assert configured_level(Worker) == logging.WARN


def test_faust_s_own_worker_would_lower_it_to_debug() -> None:
    # What the override is for: if Faust stops doing this, it can go.
    assert configured_level(faust.Worker) == logging.DEBUG
