"""JSON for the service's own records (internal topic, stored state), through orjson.

orjson encodes and decodes several times faster than the standard library, which was a
large share of the hot path. It refuses what the standard library accepts in two cases
that validated input can still contain: lone UTF-16 surrogates (`"\\ud800"` is valid JSON
but not UTF-8) and integers beyond 64 bits; those records take the standard library's path.
Reading, orjson takes an integer beyond 64 bits for a float (an amount near the 1e15
limit is 1e21 micro-units), so such a record starts with a space (valid JSON, which
orjson never writes) and `loads` hands it to the standard library, which keeps it exact.
Faust's own table serializer reads stored state with orjson: there, such an amount comes
back as a float after a restart.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact JSON; the same bytes as json.dumps(separators=(",", ":")) for ASCII text."""
    try:
        # orjson's result keeps the capacity of its output buffer (about 4 KB, however
        # short the text): holding a batch of them would take gigabytes. A copy is exact-sized;
        # joining with an empty piece makes one (a single piece would be returned as it
        # is) at a third of the cost of bytes(memoryview(...)).
        return b"".join((orjson.dumps(value), b""))
    except orjson.JSONEncodeError as error:
        text = json.dumps(value, separators=(",", ":")).encode()
        return b" " + text if _BEYOND_64_BITS in str(error) else text


_BEYOND_64_BITS = "64-bit"


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


def loads(raw: bytes | str) -> Any:
    if raw[:1] in (b" ", " "):
        return json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
