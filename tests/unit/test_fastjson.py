"""The service's JSON encoder against the standard library's, which wrote the older records."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from stream_app.domain.fastjson import dumps, dumps_key, loads

KEY_PARTS = st.lists(st.one_of(st.text(), st.integers(-(2**70), 2**70)), max_size=5)


def standard(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_keys_spell_every_ascii_character_as_the_standard_library_does() -> None:
    # DEL is ASCII, and the one character orjson leaves unescaped where json.dumps does not.
    for code in range(128):
        assert dumps_key(["w", chr(code)]) == standard(["w", chr(code)]), code


@given(KEY_PARTS)
def test_keys_are_the_standard_librarys_text(parts: list[object]) -> None:
    assert dumps_key(parts) == standard(parts)


@example([-(2**63) - 1, 2**64, 999_999_999_999_999_000_000])  # orjson reads them as floats
@given(KEY_PARTS)
def test_values_read_back_as_written(parts: list[object]) -> None:
    assert loads(dumps(parts)) == parts
    assert json.loads(dumps(parts)) == parts
