"""Which event_ids were already processed, remembered for the attribution window.

`EventIdMemory(horizon_ms)` is compiled (engine/src/dedupe.rs): it remembers each accepted
event_id with its ts until stream time passes ts + horizon. Whether an id is still
remembered is decided from stream time at the moment of the check, not from when clean-up
last ran, so results never depend on batch boundaries. `forget_expired(stream_time)`
drops, and returns in (ts, event_id) order, every id whose ts + horizon < stream_time (an
older entry of an id remembered again is stale).
"""

from __future__ import annotations

from stream_app._engine import EventIdMemory

__all__ = ["EventIdMemory"]
