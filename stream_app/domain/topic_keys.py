"""Record keys of the output topics: values joined by `|`.

A `%` or `|` inside a value is written `%25` or `%7C` (percent first), so that the key
tells its values apart: channel `a|b` with segment `c` and channel `a` with segment `b|c`
get two keys of the compacted topics, not one. Records keep the values as they came.
"""

from __future__ import annotations

import re
from typing import Final

SEPARATOR: Final = "|"
_ESCAPED: Final = re.compile("%(25|7C)")
_DECODED: Final = {"25": "%", "7C": "|"}


def encode_value(value: str) -> str:
    if "%" in value:
        value = value.replace("%", "%25")
    if SEPARATOR in value:
        value = value.replace(SEPARATOR, "%7C")
    return value


def decode_value(text: str) -> str:
    return _ESCAPED.sub(lambda match: _DECODED[match.group(1)], text)


def topic_key(*values: str) -> str:
    """The key of a record with these values, in order."""
    return SEPARATOR.join(encode_value(value) for value in values)


def split_topic_key(key: str) -> list[str]:
    """The values of a key made by `topic_key`."""
    return [decode_value(part) for part in key.split(SEPARATOR)]
