"""The other rows of the Faust facts table, on the same preloaded events: kafka-python's
consumer, and a stock Faust agent (`async for` over the stream, raw value serializer,
json.loads per event), which is what our hot path replaces."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid

from bench.common import BenchError, Broker, Progress, read_every_record
from bench.throughput import Dataset


def kafka_python(broker: Broker, dataset: Dataset, progress: Progress) -> float:
    def decode(value: bytes | None) -> None:
        with contextlib.suppress(ValueError, TypeError):
            json.loads(value)  # type: ignore[arg-type]

    total, seconds = read_every_record(
        broker.bootstrap,
        dataset.topics,
        decode,
        lambda seen, total: progress(f"kafka-python consumer: {seen:,}/{total:,} events"),
    )
    return float(total / seconds)


_AGENT = """
import json, os, sys, time
import faust
bootstrap, topics, total, out = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
app = faust.App("bench-faust-" + os.urandom(4).hex(), broker="kafka://" + bootstrap,
                store="memory://", web_enabled=False, consumer_auto_offset_reset="earliest")
source = app.topic(*topics, value_serializer="raw")
state = {"n": 0, "t0": 0.0}

@app.agent(source)
async def count(stream):
    async for value in stream:
        if state["n"] == 0:
            state["t0"] = time.monotonic()
        try:
            json.loads(value)
        except ValueError:
            pass
        state["n"] += 1
        if state["n"] == total:
            with open(out, "w") as f:
                f.write(str(total / (time.monotonic() - state["t0"])))
            os._exit(0)

faust.Worker(app, loglevel="error", quiet=True).execute_from_commandline()
"""


def stock_faust(broker: Broker, dataset: Dataset, events: int, progress: Progress) -> float:
    """Events/s of a stock Faust agent over the first `events` events it reads."""
    out = broker.data_dir / f"faust-agent-{uuid.uuid4().hex[:8]}.txt"
    progress(f"stock Faust agent: {events:,} events", force=True)
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _AGENT,
            broker.bootstrap,
            ",".join(dataset.topics),
            str(events),
            str(out),
        ],
        cwd=broker.data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        process.wait(timeout=max(300, events / 500))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise BenchError("the stock Faust agent did not finish") from None
    if not out.exists():
        raise BenchError(f"the stock Faust agent exited with {process.returncode}")
    return float(out.read_text())
