"""Counts per view, window and key: sums and distinct customers, with change tracking.

Every count is made for the key and its three roll-ups at once, so that a distinct
customer counts once in each roll-up and the rates board only has to add partitions up.

Distinct customers are held once per slot and field, each with the keys it was counted
under, not in a set per cell: a cell's members are those of the keys it rolls up, so its
count is kept as a number and its members are worked out only when the slot is dropped.
A set per cell held every new customer four times (the key and its three roll-ups), the
largest share of the memory per open offer.

Stored, a customer's memberships in one window (every view, every distinct field) are one
entry, rewritten when one is added: one entry per membership was most of the changelog's
records, about 4 per event.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from stream_app.core.fastjson import dumps_key, loads
from stream_app.core.immutable import immutable
from stream_app.core.views import VIEW_BY_NAME, VIEWS, Key, View, rollups

WindowKey = tuple[str, int]  # (window label, window start)
_Slot = tuple[str, str, int]  # (view name, window label, window start)


class _Cell:
    """One key's counts in one slot. Change tracking is two flags on the cell and two lists
    of cells, not sets of (slot, key) tuples: `count` runs for 4 roll-ups a few times
    per event, and building and hashing those tuples was a large share of the hot path."""

    __slots__ = ("distinct", "key", "slot", "sums", "unpublished", "unsaved")

    def __init__(self, slot: _Slot, key: Key, sums: int, distinct: int) -> None:
        self.sums = [0] * sums
        # Per distinct field, how many customers counted under a key this cell rolls up.
        self.distinct = [0] * distinct
        self.slot = slot
        self.key = key
        # Listed in _Changes.cells / WindowCounts._partials since the last take.
        self.unsaved = False
        self.unpublished = False

    def vector(self) -> list[int]:
        return [*self.sums, *self.distinct]


# The key cells a customer was counted under in one slot and field: one cell (nearly
# always), or a tuple of them, so that no container is allocated per customer.
_Held = _Cell | tuple[_Cell, ...]
# Per slot, per distinct field: each counted customer's key cells.
_Members = list[dict[str, _Held]]


@immutable
class Partial:
    """One partition's current vector of one key of one view in one window."""

    view: str
    label: str
    start: int
    key: Key
    vector: list[int]


# A customer in one window: (window label, window start, customer).
_Group = tuple[str, int, str]


@dataclass(slots=True)
class _Changes:
    cells: list[_Cell] = field(default_factory=list)
    # A customer's new membership in a slot (its window's entry is written again).
    members: list[tuple[_Slot, str]] = field(default_factory=list)
    dropped: list[tuple[_Slot, dict[Key, _Cell], _Members]] = field(default_factory=list)


class WindowCounts:
    def __init__(self) -> None:
        self._slots: dict[_Slot, dict[Key, _Cell]] = {}
        self._members: dict[_Slot, _Members] = {}
        # Per slot, each counted key's cell and its roll-ups' cells, in rollups() order.
        self._families: dict[_Slot, dict[Key, tuple[_Cell, ...]]] = {}
        self._changes = _Changes()
        self._partials: list[_Cell] = []
        # Entries of one membership each, as versions before wrote them, restored: written
        # again as their customer's window entry, and deleted (see take_changes).
        self._migrated: dict[str, _Group] = {}

    def count(self, view: View, window: WindowKey, key: Key,
              sums: Sequence[tuple[str, int]], distinct: Sequence[str], customer: str) -> None:
        """Add the amounts to sum fields and count `customer` once in distinct fields, of
        the key and its roll-ups.

        A roll-up's members are the union of its keys' members, so a customer already
        counted under the key is counted in its roll-ups too, and only the key's
        membership is stored: `restore` adds the roll-ups back (a quarter of the entries).
        """
        # Runs a few times per event for 4 cells each: one lookup finds all four.
        slot = (view.name, *window)
        families = self._families.get(slot)
        family = None if families is None else families.get(key)
        if family is None:
            family = self._family(view, slot, key)
        joined: list[_Cell] = []  # the cells a customer was new to
        sum_index, distinct_index = _SUM_INDEX[view.name], _DISTINCT_INDEX[view.name]
        for field_name, amount in sums:
            index = sum_index[field_name]
            for cell in family:
                cell.sums[index] += amount
        for field_name in distinct:
            new_to = self._join(slot, family, distinct_index[field_name], customer)
            if not new_to:
                continue
            self._changes.members.append((slot, customer))
            if not sums:
                joined += new_to
        cells, partials = self._changes.cells, self._partials
        # A sum changes all four cells, a new member those it was new to.
        for cell in family if sums else joined:
            if not cell.unsaved:
                cell.unsaved = True
                cells.append(cell)
            if not cell.unpublished:
                cell.unpublished = True
                partials.append(cell)

    def _join(self, slot: _Slot, family: tuple[_Cell, ...], index: int,
              customer: str) -> Sequence[_Cell]:
        """Count `customer` under the family's key (its first cell); returns the cells of
        the family it was new to, none if it was counted under the key already."""
        members = self._members[slot][index]
        own = family[0]
        held = members.get(customer)
        if held is None:
            members[customer] = own
            new_to: Sequence[_Cell] = family
        else:
            others = held if isinstance(held, tuple) else (held,)
            if own in others:
                return ()
            members[customer] = (*others, own)
            # Every held key was counted through its family, so the families already
            # name the cells the customer is counted in.
            families = self._families[slot]
            new_to = family
            for other in others:
                counted = families[other.key]
                new_to = [cell for cell in new_to if cell not in counted]
        for cell in new_to:
            cell.distinct[index] += 1
        return new_to

    def vector(self, view: View, window: WindowKey, key: Key) -> list[int] | None:
        cell = self._slots.get((view.name, *window), {}).get(key)
        return None if cell is None else cell.vector()

    def windows(self) -> Iterator[tuple[str, WindowKey]]:
        for view_name, label, start in list(self._slots):
            yield view_name, (label, start)

    def cells(self, view: View, window: WindowKey) -> dict[Key, list[int]]:
        slot = self._slots.get((view.name, *window), {})
        return {key: cell.vector() for key, cell in slot.items()}

    def drop(self, view_name: str, window: WindowKey) -> None:
        slot = (view_name, *window)
        cells = self._slots.pop(slot, None)
        members = self._members.pop(slot, [])
        self._families.pop(slot, None)
        if cells is not None:
            self._changes.dropped.append((slot, cells, members))

    def take_partials(self) -> list[Partial]:
        partials = []
        for cell in sorted(self._partials, key=_slot_and_key):
            cell.unpublished = False
            if self._slots.get(cell.slot, {}).get(cell.key) is cell:
                partials.append(Partial(*cell.slot, cell.key, cell.vector()))
        self._partials = []
        return partials

    # -- persistence -------------------------------------------------------------------
    def take_changes(self, prefix: str) -> dict[str, Any]:
        """Store entries: one per changed cell's sums, and one per customer and window
        whose memberships changed, holding all of them (None once there are none)."""
        changes: dict[str, Any] = {}
        # Ordered, so that the same changes give the same records in the same order.
        groups: dict[_Group, None] = {}
        for slot, cells, members in self._changes.dropped:
            for key in cells:
                changes[_cell_key(prefix, slot, key)] = None
            for held_by in members:
                for customer in held_by:
                    groups[(slot[1], slot[2], customer)] = None
        for cell in self._changes.cells:
            cell.unsaved = False
            if self._slots.get(cell.slot, {}).get(cell.key) is cell:
                changes[_cell_key(prefix, cell.slot, cell.key)] = list(cell.sums)
        for slot, customer in self._changes.members:
            groups[(slot[1], slot[2], customer)] = None
        for old_key, group in self._migrated.items():
            changes[prefix + old_key] = None
            groups[group] = None
        self._migrated = {}
        for group in groups:
            changes[_group_key(prefix, group)] = self._memberships(group) or None
        self._changes = _Changes()
        return changes

    def _memberships(self, group: _Group) -> list[list[Any]]:
        """Every key a customer was counted under in a window: [view, field, *key] rows
        (the field is the distinct field's position among the view's distinct fields)."""
        label, start, customer = group
        rows: list[list[Any]] = []
        for view_name in VIEW_BY_NAME:
            members = self._members.get((view_name, label, start))
            if members is None:
                continue
            for index, held_by in enumerate(members):
                held = held_by.get(customer)
                if held is None:
                    continue
                for cell in held if isinstance(held, tuple) else (held,):
                    rows.append([view_name, index, *cell.key])
        return rows

    def restore(self, entry_key: str, value: Any) -> None:
        """Take back one entry written by take_changes (without its prefix)."""
        parts = loads(entry_key)
        if len(parts) == 3:
            label, start, customer = parts
            customer = intern(customer)
            for view_name, index, first, second in value:
                self._restore_member(view_name, label, start, (first, second), index, customer)
            return
        view_name, label, start, first, second = parts[:5]
        if len(parts) == 5:
            self._cell(VIEW_BY_NAME[view_name], (view_name, label, start),
                       (first, second)).sums[:] = value
            return
        # One membership per entry, as versions before wrote them.
        customer = intern(parts[6])
        self._restore_member(view_name, label, start, (first, second), parts[5], customer)
        self._migrated[entry_key] = (label, start, customer)

    def _restore_member(self, view_name: str, label: str, start: int, key: Key, index: int,
                        customer: str) -> None:
        # Also right for a roll-up's own key, as versions before could store it: its
        # roll-ups are itself and (__all__, __all__), which hold the customer too.
        slot = (view_name, label, start)
        self._join(slot, self._family(VIEW_BY_NAME[view_name], slot, key), index, customer)

    def forget_changes(self) -> None:
        for cell in self._changes.cells:
            cell.unsaved = False
        for cell in self._partials:
            cell.unpublished = False
        self._changes = _Changes()
        self._partials = []

    def _family(self, view: View, slot: _Slot, key: Key) -> tuple[_Cell, ...]:
        """The key's cell, then those of its roll-ups, each once (a roll-up's own key, as
        restored from versions before, is its own roll-up); made once per slot and key."""
        families = self._families.get(slot)
        if families is None:
            families = self._families[slot] = {}
        family = families.get(key)
        if family is None:
            family = families[key] = tuple(
                {rolled: self._cell(view, slot, rolled) for rolled in rollups(key)}.values())
        return family

    def _cell(self, view: View, slot: _Slot, key: Key) -> _Cell:
        cells = self._slots.get(slot)
        if cells is None:
            cells = self._slots[slot] = {}
            self._members[slot] = [{} for _ in view.distinct]
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = _Cell(slot, key, len(view.sums), len(view.distinct))
        return cell


def _slot_and_key(cell: _Cell) -> tuple[_Slot, Key]:
    return cell.slot, cell.key


# Each field's position in a view's sums, and among its distinct fields.
_SUM_INDEX = {view.name: {name: i for i, name in enumerate(view.sums)} for view in VIEWS}
_DISTINCT_INDEX = {view.name: {name: i for i, name in enumerate(view.distinct)}
                   for view in VIEWS}


# Entry keys are JSON lists, so that any character may appear in a dimension value.
def _cell_key(prefix: str, slot: _Slot, key: Key) -> str:
    return prefix + dumps_key([*slot, *key])


def _group_key(prefix: str, group: _Group) -> str:
    return prefix + dumps_key(list(group))
