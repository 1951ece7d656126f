"""`simulate --random-keys`: keys unrelated to customers, the same for a seed."""

from __future__ import annotations

from stream_app.cli import _build_parser
from stream_app.settings import Settings
from stream_app.tools.simulator.command import parse_options, random_keys


def test_random_keys_are_seeded_and_spread() -> None:
    first, again, other = random_keys(5), random_keys(5), random_keys(6)
    keys = [first() for _ in range(1000)]
    assert keys == [again() for _ in range(1000)]
    assert keys != [other() for _ in range(1000)]
    assert len(set(keys)) == 1000
    assert all(len(key) == 16 for key in keys)


def test_the_option_reaches_the_simulate_options() -> None:
    parser = _build_parser()
    on = parse_options(parser.parse_args(["simulate", "--random-keys"]), Settings(), 0)
    off = parse_options(parser.parse_args(["simulate"]), Settings(), 0)
    assert on.random_keys and not off.random_keys
