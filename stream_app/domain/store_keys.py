"""Keys of the entries the stages keep in their changelog-backed tables.

The compiled core writes a customer partition's entries (engine/src/partition.rs) with
these two among its own; the rates board (board.py) writes its entries with them too.
"""

from __future__ import annotations

from typing import Final

# The key of a partition's meta entry in its store (the compiled core writes its entries;
# the rates board keeps its own meta entry under the same key).
META_KEY: Final = "m"
# The prefix of a window's entry.
WINDOW_PREFIX: Final = "w|"
