"""JSON for the service's own records (internal topic, stored state), through orjson.

orjson encodes and decodes several times faster than the standard library, which was a
large share of the hot path. It refuses what the standard library accepts in two cases
that validated input can still contain: lone UTF-16 surrogates (`"\\ud800"` is valid JSON
but not UTF-8) and integers beyond 64 bits; those records take the standard library's path.
Reading, orjson takes an integer beyond 64 bits for a float (an amount near the 1e15
limit is 1e21 micro-units): a text with a run of 19 digits is read by the standard
library, which keeps it exact.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact JSON; the same bytes as json.dumps(separators=(",", ":")) for ASCII text."""
    try:
        # orjson's result keeps the capacity of its output buffer (about 4 KB, however
        # short the text): holding a batch of them took gigabytes. A copy is exact-sized;
        # joining with an empty piece makes one (a single piece would be returned as it
        # is) at a third of the cost of bytes(memoryview(...)).
        return b"".join((orjson.dumps(value), b""))
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def dumps_key(value: Any) -> str:
    """JSON text used as a key: exactly json.dumps's, so keys written before still match."""
    try:
        raw = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))
    # json.dumps escapes non-ASCII characters and DEL, orjson writes them as they are.
    if raw.isascii() and b"\x7f" not in raw:
        return raw.decode()
    return json.dumps(value, separators=(",", ":"))


# The shortest integers beyond 64 bits have 19 digits; ids and timestamps have fewer.
_LONG_DIGITS = re.compile(r"\d{19}")
_LONG_DIGITS_BYTES = re.compile(rb"\d{19}")


def loads(raw: bytes | str) -> Any:
    long_digits = _LONG_DIGITS_BYTES if isinstance(raw, bytes) else _LONG_DIGITS
    if long_digits.search(raw) is None:  # type: ignore[arg-type]
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)
