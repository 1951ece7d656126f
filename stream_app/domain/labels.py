"""A bound on the label values of each dimension, so that hostile input cannot grow memory.

Dimension values (channel, segment, campaign_type, product_line) come from producers the
service does not control: a million distinct segments would mean a million series in
every window, in the totals, the board and /metrics. Each partition of customers admits
at most `limit` values per dimension, in the order its log presents them; any other value
is counted under `__other__`. So are values longer than MAX_LABEL_CHARS and the reserved
labels `__all__` and `__other__` themselves (a segment named `__all__` would otherwise be
added into the roll-ups twice). A missing value (`__none__`) needs no room.

An admitted value leaves once unused for the attribution window of stream time, so junk
sent first cannot push real values into `__other__` for good. The admitted values and
their recorded last use are part of the partition's durable state, so a replay after a
crash or a rebalance decides every value exactly as the first run did.

`LabelCap(limit, expire_ms)` is compiled (engine/src/labels.rs): the last use is recorded
in steps of 1/REFRESH_DIVISOR of `expire_ms` (each change is a store write), and a value
leaves once stream time passes its recorded last use by `expire_ms` + that step.
"""

from __future__ import annotations

from typing import Final

from stream_app._engine import LabelCap
from stream_app.domain.views import ALL

OTHER: Final = "__other__"
DEFAULT_MAX_LABEL_VALUES: Final = 300
# Longer than any real channel or product name, short enough for a readable series.
MAX_LABEL_CHARS: Final = 200
# An admitted value's last use is recorded (and stored) again once it is this share of the
# expiry older: a value in steady use costs a few store writes per attribution window.
REFRESH_DIVISOR: Final = 8
RESERVED: Final = frozenset({ALL, OTHER})

CHANNEL: Final = "channel"
SEGMENT: Final = "segment"
CAMPAIGN_TYPE: Final = "campaign_type"
PRODUCT_LINE: Final = "product_line"
DIMENSIONS: Final = (CHANNEL, SEGMENT, CAMPAIGN_TYPE, PRODUCT_LINE)

__all__ = [
    "ALL",
    "DEFAULT_MAX_LABEL_VALUES",
    "DIMENSIONS",
    "MAX_LABEL_CHARS",
    "OTHER",
    "REFRESH_DIVISOR",
    "RESERVED",
    "LabelCap",
]
