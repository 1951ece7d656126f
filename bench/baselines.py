"""The other rows of the Faust facts table, on the same preloaded events: kafka-python's
consumer, and a stock Faust agent (`async for` over the stream, raw value serializer,
json.loads per event), which is what our hot path replaces."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

from kafka import KafkaConsumer, TopicPartition

from bench.common import PARTITIONS, BenchError, Broker, Progress
from bench.throughput import Dataset


def kafka_python(broker: Broker, dataset: Dataset, progress: Progress) -> float:
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        partitions = [TopicPartition(t, p) for t in dataset.topics for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        total = sum(consumer.end_offsets(partitions).values())
        seen = 0
        started = time.monotonic()
        while seen < total:
            for records in consumer.poll(timeout_ms=1000, max_records=10_000).values():
                for record in records:
                    try:
                        json.loads(record.value)
                    except ValueError:
                        pass
                seen += len(records)
            progress(f"kafka-python consumer: {seen:,}/{total:,} events")
        return float(total / (time.monotonic() - started))
    finally:
        consumer.close()


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
