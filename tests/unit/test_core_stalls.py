"""The stall detector behind the worker's liveness check (BatchConsumer.verify_event_path)."""

from __future__ import annotations

from stream_app.domain.stalls import Resumed, StallDetector, Stalled

OFFERS_3 = ("upsell.offers", 3)


def test_a_partition_that_keeps_handling_records_is_never_reported() -> None:
    detector = StallDetector(timeout_s=60)
    # Records always wait (a busy partition) and the handled offset moves at every look,
    # over ten times the timeout.
    seen = [
        detector.observe(OFFERS_3, now=10.0 * tick, handled=100 * tick, waiting=500)
        for tick in range(60)
    ]
    assert seen == [None] * 60


def test_an_idle_partition_is_no_stall() -> None:
    detector = StallDetector(timeout_s=60)
    seen = [
        detector.observe(OFFERS_3, now=10.0 * tick, handled=41, waiting=0) for tick in range(60)
    ]
    assert seen == [None] * 60
    # Records arriving after a long idle time start the count then, not at the last record.
    assert detector.observe(OFFERS_3, now=600.0, handled=41, waiting=7) is None
    assert detector.observe(OFFERS_3, now=659.0, handled=41, waiting=7) is None
    assert detector.observe(OFFERS_3, now=660.0, handled=41, waiting=7) == Stalled(
        OFFERS_3, 60.0, 7
    )


def test_a_stall_is_reported_once_with_the_partition_the_lag_and_what_to_do() -> None:
    detector = StallDetector(timeout_s=60)
    assert detector.observe(OFFERS_3, now=0.0, handled=41, waiting=12) is None
    looks = [
        detector.observe(OFFERS_3, now=float(t), handled=41, waiting=12 + t)
        for t in range(7, 600, 7)
    ]
    stalls = [seen for seen in looks if seen is not None]
    assert stalls == [Stalled(OFFERS_3, 63.0, 75)]  # the first look at or past 60 s
    message = stalls[0].message()
    for part in (
        "upsell.offers partition 3",
        "75 records wait",
        "63 s",
        "stream_processing_timeout",
        "restart the worker",
        "log",
    ):
        assert part in message


def test_each_stall_is_reported_once_and_its_end_once() -> None:
    detector = StallDetector(timeout_s=60)
    other = ("upsell.purchases", 0)
    detector.observe(OFFERS_3, now=0.0, handled=41, waiting=5)
    detector.observe(other, now=0.0, handled=9, waiting=0)
    assert detector.observe(OFFERS_3, now=61.0, handled=41, waiting=5) == Stalled(OFFERS_3, 61.0, 5)
    assert detector.observe(other, now=61.0, handled=9, waiting=0) is None  # its own count
    assert detector.observe(OFFERS_3, now=90.0, handled=41, waiting=5) is None
    resumed = detector.observe(OFFERS_3, now=100.0, handled=46, waiting=3)
    assert resumed == Resumed(OFFERS_3, 100.0)
    assert resumed.message() == "upsell.offers partition 3 moves again after a stall of 100 s"
    assert detector.observe(OFFERS_3, now=130.0, handled=46, waiting=3) is None
    # A second stall of the same partition is a new one: reported again, once.
    assert detector.observe(OFFERS_3, now=160.0, handled=46, waiting=3) == Stalled(
        OFFERS_3, 60.0, 3
    )
    assert detector.observe(OFFERS_3, now=400.0, handled=46, waiting=3) is None


def test_a_partition_with_nothing_handled_yet_stalls_too() -> None:
    detector = StallDetector(timeout_s=5)
    assert detector.observe(OFFERS_3, now=0.0, handled=None, waiting=20) is None
    assert detector.observe(OFFERS_3, now=5.0, handled=None, waiting=20) == Stalled(
        OFFERS_3, 5.0, 20
    )
