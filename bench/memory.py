"""Resident memory of one partition's state against keys and open offers, without Kafka.

Each measurement runs in a fresh interpreter: offers go through the same steps as in the
worker (encoded for the internal topic, decoded, applied to a CustomerPartition, a batch
of 10,000 at a time, with the batch's changes encoded by a PartitionStore configured as the
worker's, its changelog records dropped). The figure is the growth of
the process's RSS over the run, after a garbage collection: what the worker itself would
hold, interpreter and allocator overhead included.

The allocator is not asked for anything at the end: the store hands glibc's free pages back
after every snapshot (`release_free_memory`), as it does in the worker, and nothing else.
So the figure is the live state plus whatever the worker really keeps between snapshots
(fragmentation, the last batch's buffers), not the high-water mark of the last snapshot's
encoding. That peak (VmHWM growth) is reported beside it: what the worker needs for a
moment while it writes a snapshot.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from dataclasses import dataclass

from bench.common import ROOT, MemoryTable, rss_of

BATCH = 10_000
# One offer every 0.5 s of event time: a million offers span 5.8 days, inside the 7-day
# attribution window, so none is forgotten; every run has the same density, so the window
# cells per offer stay the same and the growth per offer is what an open offer costs.
GAP_MS = 500
START_MS = 1_795_341_600_000


@dataclass(frozen=True)
class MemoryRun:
    offers: int
    keys: int
    rss_growth: int
    open_offers: int
    # The growth of the peak RSS: the live state plus the last snapshot's buffers.
    peak_growth: int
    # None: a new customer for nearly every offer (each offer adds a distinct customer to
    # every window it counts in); a number: that many customers, all already counted.
    customers: int | None = None

    @property
    def per_offer(self) -> float:
        return self.rss_growth / max(1, self.offers)


def measure(offers: int, keys: int, customers: int | None = None) -> MemoryRun:
    """Run in a child interpreter so that every figure starts from the same baseline."""
    code = (
        "import json,sys; from bench.memory import _child; "
        f"print(json.dumps(_child({offers}, {keys}, {customers})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return MemoryRun(**json.loads(done.stdout))


def _child(offers: int, keys: int, customers: int | None = None) -> dict[str, int]:
    import os

    from stream_app.domain.events import Offer
    from stream_app.domain.forwarding import Forwarded, decode_forwarded, encode_forwarded
    from stream_app.domain.partition import CustomerPartition
    from stream_app.pipeline import window_config
    from stream_app.runtime.state_store import PartitionStore, release_free_memory
    from stream_app.settings import Settings

    config = window_config(Settings())
    state = CustomerPartition(config)
    store = PartitionStore(MemoryTable(), keep_copy=False, keeps_entries=False)
    channels = max(1, round(keys**0.5))
    segments = max(1, keys // channels)
    # A customer comes back only after offers / 4 others: new in nearly every window.
    customers = max(1, offers // 4) if customers is None else customers
    gap = GAP_MS
    gc.collect()
    release_free_memory()
    # Resets VmHWM to the current RSS (Linux 4.0 and later).
    with open(f"/proc/{os.getpid()}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = rss_of(os.getpid())
    for start in range(0, offers, BATCH):
        for n in range(start, min(offers, start + BATCH)):
            key = n % (channels * segments)
            offer = Offer(
                event_id=f"e-{n:012d}-{n * 7919 % 1_000_003:07d}-aaaaaaaaaaaa",
                offer_id=f"o-{n:012d}-{n * 7919 % 1_000_003:07d}-aaaaaaaaaaaa",
                customer_id=f"cust-{n * 31 % customers:07d}",
                channel=f"channel-{key // segments}",
                segment=f"segment-{key % segments}",
                ts=START_MS + n * gap,
                campaign_id="cmp-limited-time-01",
                campaign_type="limited_time",
                product_line="cloud_storage",
                loyalty_member=False,
                offered_price=19.99,
            )
            raw = encode_forwarded(Forwarded("offers", 0, n, START_MS + n * gap, offer))
            state.apply(decode_forwarded(raw), n)
        state.take_partials()
        # As the attributing stage persists a partition (stages/attribute.py).
        store.write_chunked(0, state.take_changes_chunks, state.snapshot_chunks)
        store.take_outbox()  # produced and dropped by the hot path in the worker
    gc.collect()
    grown = rss_of(os.getpid()) - before
    peak = rss_of(os.getpid(), "VmHWM") - before
    return {
        "offers": offers,
        "keys": channels * segments,
        "rss_growth": grown,
        "peak_growth": peak,
        "open_offers": state.open_offers(),
        "customers": None if customers == max(1, offers // 4) else customers,
    }


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]), int(sys.argv[2]))))
