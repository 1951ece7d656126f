"""The partials topic's messages as the compiled partition writes them
(`take_partials_encoded`) read by the board exactly as board.encode_partials writes them:
the same partials, split the same way, the stream time on the last message only, and
sums beyond 64 bits kept exact."""

from __future__ import annotations

from stream_app.domain.board import decode_partials, encode_partials
from stream_app.domain.forwarding import Forwarded
from stream_app.domain.partition import CustomerPartition
from stream_app.domain.window_config import WindowConfig
from tests.unit.conftest import offer, purchase

T0 = 1_795_305_600_000
MINUTE = 60_000
CONFIG = WindowConfig((("5m", 5 * MINUTE), ("1h", 60 * MINUTE)), 15 * MINUTE, MINUTE)


def fed(events: int) -> CustomerPartition:
    partition = CustomerPartition(CONFIG)
    for n in range(events):
        customer = f"c{n % 7}"
        ts = T0 + n * 20_000
        partition.apply(
            Forwarded(
                "offers",
                0,
                2 * n,
                ts,
                offer(f"o{n}", customer, ts, offer_id=f"X{n}", channel=f"ch{n % 3}"),
            ),
            2 * n,
        )
        # Every third purchase is near the 1e15 limit: its revenue sums pass 64 bits.
        amount = 999_999_999_999_999_000_000 if n % 3 == 0 else 2_500_000
        paid = purchase(f"p{n}", customer, ts + 1_000, amount_micros=amount, offer_id=f"X{n}")
        partition.apply(Forwarded("purchases", 0, 2 * n, ts, paid), 2 * n + 1)
    return partition


def test_the_compiled_messages_read_as_the_python_encoder_s() -> None:
    for per_message in (1, 4, 2_000):
        compiled, python = fed(40), fed(40)
        messages = compiled.take_partials_encoded(3, per_message)
        partials = python.take_partials()
        assert len(partials) > 4
        starts = range(0, len(partials), per_message)
        expected = [
            encode_partials(
                3, python.stream_time if i == starts[-1] else None, partials[i : i + per_message]
            )
            for i in starts
        ]
        assert [decode_partials(m) for m in messages] == [decode_partials(m) for m in expected]
        assert any(m.startswith(b" ") for m in messages)  # sums beyond 64 bits
        assert any(v > 2**63 for m in messages for p in decode_partials(m)[2] for v in p.vector)


def test_a_batch_without_changes_still_sends_its_stream_time() -> None:
    partition = fed(3)
    partition.take_partials_encoded(0, 10)
    (message,) = partition.take_partials_encoded(5, 10)
    assert decode_partials(message) == (5, partition.stream_time, [])
