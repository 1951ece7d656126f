"""Stopping the child processes a tool started (the demo's worker and simulator, the
benchmark's workers)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterable


def stop_children(children: Iterable[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM to every child still running, so that it stops cleanly; SIGKILL to any that
    has not exited within timeout_s of that."""
    running = [child for child in children if child.poll() is None]
    for child in running:
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in running:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
