"""The garbage collector's thresholds in a worker process.

A worker's live state is millions of container objects (open offers, distinct customers,
window cells), and the hot path allocates a few hundred more per event, nearly all freed
by reference counting. With CPython's default thresholds (700, 10) a young collection runs
every 700 net allocations and an older one every 7,000, each traversing whatever survived
since, so that collections take a large share of the CPU (bench/core.py shows it).
Collecting young objects every 10,000 allocations and the older ones every 200,000 makes
that share small; full collections keep their default schedule.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
OLDER_THRESHOLD = 20


def tune_collector() -> None:
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD)
