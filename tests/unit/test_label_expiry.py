"""Admitted label values leave when unused for the attribution window of stream time
(labels.py), so junk sent first cannot hold the cap (UPSELL_MAX_LABEL_VALUES) forever;
the partition's store follows, and a restore decides as the uninterrupted run."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.domain.events import Offer, Purchase
from stream_app.domain.forwarding import Forwarded, decode_forwarded, encode_forwarded, tick
from stream_app.domain.labels import OTHER
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.totals import LABEL_OVERFLOW_TOTAL, OFFERS_TOTAL
from stream_app.domain.window_config import WindowConfig

MINUTE = 60_000
T0 = 1_795_305_600_000  # 2026-11-22T00:00:00Z
ATTRIBUTION = 8 * MINUTE
# A value leaves once stream time passes its recorded last use by the attribution window
# + an eighth of it (the step in which the last use is recorded).
STEP = ATTRIBUTION // 8
CONFIG = WindowConfig(
    sizes=(("5m", 5 * MINUTE),), attribution_ms=ATTRIBUTION, grace_ms=0, max_label_values=2
)


class Driver:
    def __init__(self, partition: CustomerPartition) -> None:
        self.partition = partition
        self.offset = 0
        self.store: dict[str, Any] = {}
        self.label_writes = 0

    def offer(self, segment: str, ts: int, channel: str = "email") -> str:
        """Send an offer; the segment it was counted under."""
        n = self.offset
        before = self.partition.totals[OFFERS_TOTAL].copy()
        self.send(Offer(f"e{n}", f"o{n}", f"c{n % 5}", channel, segment, ts))
        (counted,) = self.partition.totals[OFFERS_TOTAL] - before
        return counted[1]

    def send(self, event: Offer | Purchase) -> None:
        item = decode_forwarded(encode_forwarded(Forwarded("offers", 0, self.offset, None, event)))
        self.partition.apply(item, self.offset)
        self.offset += 1

    def persist(self) -> None:
        self.partition.take_partials()
        for key, value in self.partition.take_changes().items():
            self.label_writes += key.startswith("l|")
            if value is None:
                self.store.pop(key, None)
            else:
                self.store[key] = value

    def stored_labels(self) -> dict[str, int]:
        return {key: value for key, value in self.store.items() if key.startswith("l|")}


def test_junk_sent_first_leaves_and_a_real_value_is_admitted_instead_of_other() -> None:
    driver = Driver(CustomerPartition(CONFIG))
    assert driver.offer("junk-1", T0) == "junk-1"
    assert driver.offer("junk-2", T0) == "junk-2"
    assert driver.offer("smb", T0 + MINUTE) == OTHER  # the cap (2) is full
    driver.persist()
    # Unused for the attribution window and its step, to the millisecond: still there.
    assert driver.offer("smb", T0 + ATTRIBUTION + STEP) == OTHER
    assert driver.partition.admitted_labels("segment") == {"junk-1", "junk-2"}
    # One ms more: both junk values leave; the real one takes a place.
    assert driver.offer("smb", T0 + ATTRIBUTION + STEP + 1) == "smb"
    assert driver.partition.admitted_labels("segment") == {"smb"}
    driver.persist()
    # email was recorded one ms before, in use all along: no new write a ms later.
    assert driver.stored_labels() == {
        'l|["channel","email"]': T0 + ATTRIBUTION + STEP,
        'l|["segment","smb"]': T0 + ATTRIBUTION + STEP + 1,
    }
    # A junk value coming back is a new value again, admitted while there is room.
    assert driver.offer("junk-1", T0 + ATTRIBUTION + STEP + 2) == "junk-1"
    assert driver.offer("junk-2", T0 + ATTRIBUTION + STEP + 3) == OTHER
    assert driver.partition.totals[LABEL_OVERFLOW_TOTAL] == {("segment",): 3}


def test_a_value_in_use_stays_and_the_one_unused_leaves() -> None:
    driver = Driver(CustomerPartition(CONFIG))
    driver.offer("smb", T0)
    driver.offer("junk", T0)
    driver.persist()
    writes = driver.label_writes
    # smb is used every 10 s for an hour (360 times), persisted each time; junk never again.
    for use in range(1, 361):
        assert driver.offer("smb", T0 + use * 10_000) == "smb"
        driver.persist()
    assert driver.partition.admitted_labels("segment") == {"smb"}
    assert driver.offer("enterprise", T0 + 61 * MINUTE) == "enterprise"
    # The stored last use is refreshed once per step (a minute), not on every use: 60
    # writes each for smb and email, and junk's deletion.
    assert (
        T0 + 60 * MINUTE - STEP < driver.stored_labels()['l|["segment","smb"]'] <= T0 + 60 * MINUTE
    )
    assert driver.label_writes - writes == 2 * 60 + 1


def test_a_value_unused_for_exactly_the_attribution_window_stays() -> None:
    driver = Driver(CustomerPartition(CONFIG))
    driver.offer("a", T0)
    driver.offer("b", T0)
    assert driver.offer("c", T0 + ATTRIBUTION) == OTHER
    assert driver.offer("a", T0 + ATTRIBUTION) == "a"


def test_stream_time_not_event_time_of_a_late_event_moves_the_clock() -> None:
    # A late event does not turn the clock back: values used before stay as recent.
    driver = Driver(CustomerPartition(CONFIG))
    driver.offer("a", T0 + 10 * MINUTE)
    driver.offer("b", T0)  # late: used at stream time T0 + 10 min
    assert driver.offer("c", T0 + 10 * MINUTE + ATTRIBUTION + STEP) == OTHER
    assert driver.offer("c", T0 + 10 * MINUTE + ATTRIBUTION + STEP + 1) == "c"


def test_purchase_product_lines_expire_too() -> None:
    driver = Driver(CustomerPartition(CONFIG))
    driver.send(Purchase("p1", "r1", "c1", T0, 1, product_line="x"))
    driver.send(Purchase("p2", "r2", "c1", T0, 1, product_line="y"))
    driver.send(Purchase("p3", "r3", "c1", T0 + ATTRIBUTION + STEP + 1, 1, product_line="z"))
    assert driver.partition.admitted_labels("product_line") == {"z"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 60), st.lists(st.integers(1, 399), max_size=6))
def test_restoring_from_the_stored_changes_decides_as_the_uninterrupted_run(
    seed: int, persist_every: int, restarts: list[int]
) -> None:
    rng = random.Random(seed)
    stream: list[tuple[str, str, int]] = []
    ts = T0
    for _ in range(400):
        ts += rng.choice([0, 1, 1000, STEP, ATTRIBUTION // 2, ATTRIBUTION + STEP])
        # Now and then a late event, before stream time.
        stream.append((rng.choice("abcde"), rng.choice("xyz"), ts - rng.choice([0, 0, 0, MINUTE])))

    def run(cut_at: set[int]) -> Driver:
        driver = Driver(CustomerPartition(CONFIG))
        for n, (segment, channel, event_ts) in enumerate(stream):
            if n in cut_at:
                driver.persist()
                restored = Driver(CustomerPartition.restore(CONFIG, dict(driver.store)))
                for dimension in ("channel", "segment"):
                    assert restored.partition.admitted_labels(
                        dimension
                    ) == driver.partition.admitted_labels(dimension)
                restored.offset, restored.store = driver.offset, driver.store
                driver = restored
            driver.offer(segment, event_ts, channel)
            if n % persist_every == 0:
                driver.persist()
        driver.persist()
        return driver

    uninterrupted = run(set())
    restarted = run(set(restarts))
    assert restarted.partition.totals.as_row() == uninterrupted.partition.totals.as_row()
    assert restarted.stored_labels() == uninterrupted.stored_labels()
    for dimension in ("channel", "segment"):
        admitted = uninterrupted.partition.admitted_labels(dimension)
        assert restarted.partition.admitted_labels(dimension) == admitted
        # The store holds exactly the admitted values.
        assert {key for key in uninterrupted.stored_labels() if f'"{dimension}"' in key} == {
            f'l|["{dimension}","{value}"]' for value in admitted
        }


def test_values_unused_for_too_long_leave_the_store_without_another_event() -> None:
    driver = Driver(CustomerPartition(CONFIG))
    driver.offer("smb", T0)
    driver.persist()
    assert driver.stored_labels() == {'l|["channel","email"]': T0, 'l|["segment","smb"]': T0}
    # Only stream time moves (a tick of the validating stage).
    driver.partition.apply(tick("", -1, -1, T0 + ATTRIBUTION + STEP + 1), driver.offset)
    driver.persist()
    assert driver.stored_labels() == {}
    assert driver.partition.admitted_labels("segment") == frozenset()
