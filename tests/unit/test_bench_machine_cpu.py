"""The bench's reading of the whole machine's busy CPU (bench/common.py), which it prints
beside a worker run's own to say what other processes took of the cores."""

from __future__ import annotations

import os
import resource
import time

from bench.common import machine_busy_seconds


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_the_machine_is_busy_at_least_for_the_cpu_this_process_burns() -> None:
    """Busy at least for this process's CPU (user time is counted) and at most all the
    cores for the wall time (in seconds, not clock ticks)."""
    wall_before = time.monotonic()
    machine_before, own_before = machine_busy_seconds(), _own_cpu_seconds()
    burnt = 0
    while _own_cpu_seconds() - own_before < 0.3:
        burnt += sum(range(10_000))
    own = _own_cpu_seconds() - own_before
    machine = machine_busy_seconds() - machine_before
    wall = time.monotonic() - wall_before
    # /proc/stat counts in clock ticks (10 ms): allow two ticks of rounding either side.
    assert machine >= own - 0.02
    assert machine <= wall * (os.cpu_count() or 1) + 0.02
    assert burnt > 0
