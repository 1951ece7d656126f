"""WindowCounts' store entries: a customer's memberships in a window are one entry, those
added to it later one more entry per write, and entries of one membership each, as versions
before wrote them, restore and are replaced."""

from __future__ import annotations

import json
from typing import Any

from stream_app.domain.cohorts import WindowCounts
from stream_app.domain.views import ALL, CAMPAIGN, CHANNEL_SEGMENT, PURCHASES

START = 1_795_305_600_000
FIVE_MINUTES = ("5m", START)
TARGETED = ("customers_targeted",)
ONE_OFFER = (("offers", 1),)


def _counted() -> WindowCounts:
    counts = WindowCounts()
    counts.count(CHANNEL_SEGMENT, FIVE_MINUTES, ("email", "smb"), ONE_OFFER, TARGETED, "alice")
    counts.count(CHANNEL_SEGMENT, FIVE_MINUTES, ("sms", "smb"), ONE_OFFER, TARGETED, "alice")
    counts.count(CAMPAIGN, FIVE_MINUTES, ("bundle", "tv"), ONE_OFFER, TARGETED, "alice")
    counts.count(
        PURCHASES,
        FIVE_MINUTES,
        ("member", "tv"),
        (("upsell_purchases", 1),),
        ("buyers_any",),
        "alice",
    )
    counts.count(CHANNEL_SEGMENT, FIVE_MINUTES, ("email", "smb"), ONE_OFFER, TARGETED, "bob")
    return counts


def _state(counts: WindowCounts) -> dict[str, dict[tuple[str, str], list[int]]]:
    return {
        view.name: counts.cells(view, FIVE_MINUTES)
        for view in (CHANNEL_SEGMENT, CAMPAIGN, PURCHASES)
    }


def _restored(entries: dict[str, Any]) -> WindowCounts:
    counts = WindowCounts()
    for key, value in entries.items():
        if value is not None:
            counts.restore(key, value)
    counts.finish_restore()
    counts.forget_changes()
    return counts


def test_a_customers_memberships_in_a_window_are_one_entry() -> None:
    changes = _counted().take_changes("")
    groups = {key: value for key, value in changes.items() if len(json.loads(key)) == 3}
    assert groups == {
        '["5m",1795305600000,"alice"]': [
            ["channel_segment", 0, "email", "smb"],
            ["channel_segment", 0, "sms", "smb"],
            ["campaign", 0, "bundle", "tv"],
            ["purchases", 0, "member", "tv"],
        ],
        '["5m",1795305600000,"bob"]': [["channel_segment", 0, "email", "smb"]],
    }
    # The rest are the cells' sums: the keys counted and their roll-ups.
    assert all(len(json.loads(key)) == 5 for key in changes.keys() - groups.keys())
    restored = _restored(changes)
    assert _state(restored) == _state(_counted())
    assert restored.cells(CHANNEL_SEGMENT, FIVE_MINUTES)[(ALL, "smb")] == [3, 0, 0, 2, 0]


def test_memberships_added_later_are_written_alone_under_the_writes_number() -> None:
    counts = _counted()
    entries = counts.take_changes("")
    counts.count(CHANNEL_SEGMENT, FIVE_MINUTES, ("push", "smb"), ONE_OFFER, TARGETED, "bob")
    counts.count(CAMPAIGN, FIVE_MINUTES, ("bundle", "tv"), ONE_OFFER, TARGETED, "bob")
    counts.count(CHANNEL_SEGMENT, FIVE_MINUTES, ("email", "smb"), ONE_OFFER, TARGETED, "carol")
    changes = counts.take_changes("")
    groups = {key: value for key, value in changes.items() if len(json.loads(key)) in (3, 4)}
    assert groups == {
        '["5m",1795305600000,"bob",1]': [
            ["channel_segment", 0, "push", "smb"],
            ["campaign", 0, "bundle", "tv"],
        ],
        # A customer new to the window: the whole entry.
        '["5m",1795305600000,"carol"]': [["channel_segment", 0, "email", "smb"]],
    }
    entries.update(changes)
    assert _state(_restored(entries)) == _state(counts)
    counts.count(CHANNEL_SEGMENT, FIVE_MINUTES, ("sms", "smb"), ONE_OFFER, TARGETED, "bob")
    later = counts.take_changes("")
    assert later['["5m",1795305600000,"bob",2]'] == [["channel_segment", 0, "sms", "smb"]]
    entries.update(later)
    assert _state(_restored(entries)) == _state(counts)


def test_a_restored_state_numbers_its_writes_after_those_it_read() -> None:
    """A key reused after a restart would replace the memberships stored under it."""
    counts = _counted()
    entries = counts.take_changes("")
    for channel in ("push", "sms", "web"):
        counts.count(CHANNEL_SEGMENT, FIVE_MINUTES, (channel, "smb"), ONE_OFFER, TARGETED, "bob")
        entries.update(counts.take_changes(""))
    assert '["5m",1795305600000,"bob",3]' in entries
    restored = _restored(entries)
    restored.count(CAMPAIGN, FIVE_MINUTES, ("bundle", "tv"), ONE_OFFER, TARGETED, "bob")
    changes = restored.take_changes("")
    assert '["5m",1795305600000,"bob",4]' in changes
    entries.update(changes)
    counts.count(CAMPAIGN, FIVE_MINUTES, ("bundle", "tv"), ONE_OFFER, TARGETED, "bob")
    assert _state(_restored(entries)) == _state(counts)
    assert _state(counts)["channel_segment"][(ALL, "smb")] == [6, 0, 0, 2, 0]


def test_memberships_added_to_a_dropped_window_are_left_out_of_a_restore() -> None:
    """Its cells and whole entries are deleted; the added ones stay stored (no write knows
    their numbers), and a restore does not bring the window back with them."""
    counts = _counted()
    entries = counts.take_changes("")
    counts.count(CHANNEL_SEGMENT, FIVE_MINUTES, ("push", "smb"), ONE_OFFER, TARGETED, "bob")
    entries.update(counts.take_changes(""))
    for view in (CHANNEL_SEGMENT, CAMPAIGN, PURCHASES):
        counts.drop(view.name, FIVE_MINUTES)
    for key, value in counts.take_changes("").items():
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = value
    assert [json.loads(key) for key in entries] == [["5m", START, "bob", 1]]
    restored = _restored(entries)
    assert restored.windows() == []
    # Counted again, bob is new to the window.
    restored.count(CHANNEL_SEGMENT, FIVE_MINUTES, ("email", "smb"), ONE_OFFER, TARGETED, "bob")
    assert restored.cells(CHANNEL_SEGMENT, FIVE_MINUTES)[("email", "smb")] == [1, 0, 0, 1, 0]


def test_a_dropped_window_deletes_its_entries() -> None:
    counts = _counted()
    entries = counts.take_changes("")
    for view in (CHANNEL_SEGMENT, CAMPAIGN, PURCHASES):
        counts.drop(view.name, FIVE_MINUTES)
    changes = counts.take_changes("")
    assert changes.keys() == entries.keys()
    assert set(changes.values()) == {None}


def test_entries_of_one_membership_each_restore_and_are_replaced() -> None:
    """Versions before wrote [view, label, start, *key, field, customer] = 1 per member."""
    current = _counted().take_changes("")
    old = {key: value for key, value in current.items() if len(json.loads(key)) == 5}
    for key, rows in current.items():
        parts = json.loads(key)
        if len(parts) == 3:
            label, start, customer = parts
            for view, index, first, second in rows:
                old[
                    json.dumps(
                        [view, label, start, first, second, index, customer], separators=(",", ":")
                    )
                ] = 1
    restored = _restored(old)
    assert _state(restored) == _state(_counted())
    changes = restored.take_changes("")
    # Each old entry is deleted and its customer's window entry written.
    assert {key for key, value in changes.items() if value is None} == {
        key for key in old if len(json.loads(key)) == 7
    }
    migrated = {key: value for key, value in changes.items() if value is not None}
    assert migrated.keys() == current.keys() - old.keys()
    assert _state(_restored({**old, **changes})) == _state(_counted())
    assert restored.take_changes("") == {}


def test_customers_of_a_dropped_window_counted_again_in_a_new_one_count_once_each() -> None:
    """A customer is held by a number while a window counts it; once every window holding
    it is dropped the number is let go and given to others: their counts and entries stay
    their own."""
    later = ("5m", START + 300_000)
    counts = WindowCounts()
    first = [f"c{n}" for n in range(50)]
    for customer in first:
        counts.count(CHANNEL_SEGMENT, FIVE_MINUTES, ("email", "smb"), ONE_OFFER, TARGETED, customer)
    counts.take_changes("")
    counts.drop(CHANNEL_SEGMENT.name, FIVE_MINUTES)
    dropped = counts.take_changes("")
    assert {json.loads(key)[2] for key in dropped if len(json.loads(key)) == 3} == set(first)
    # New customers take the numbers let go; some of the first ones come back, twice each.
    second = [f"d{n}" for n in range(40)] + first[:20]
    for customer in second + first[:20]:
        counts.count(CHANNEL_SEGMENT, later, ("sms", "smb"), ONE_OFFER, TARGETED, customer)
    changes = counts.take_changes("")
    cells = counts.cells(CHANNEL_SEGMENT, later)
    assert cells[("sms", "smb")] == [len(second) + 20, 0, 0, len(second), 0]
    groups = {
        json.loads(key)[2]: rows for key, rows in changes.items() if len(json.loads(key)) == 3
    }
    assert groups == {customer: [["channel_segment", 0, "sms", "smb"]] for customer in second}
    assert _restored(changes).cells(CHANNEL_SEGMENT, later) == cells
