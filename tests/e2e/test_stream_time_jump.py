"""Issue 18 through the real worker: a last-touch purchase decided only when stream time
jumps hours ahead still counts in its windows, and a duplicate stamped 90 minutes later
moves nothing.

Windows 10m and 1h, grace 30m, attribution window 15m; times after 2026-11-22T10:00:00Z.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.e2e.harness import deployment, latest_by_key, read_topic
from tests.e2e.test_scripted_rates import ScriptOffer, at, family, phase, purchase, rfc

SETTINGS = {"UPSELL_WINDOWS": "10m,1h", "UPSELL_GRACE": "30m", "UPSELL_ATTRIBUTION_WINDOW": "15m"}
JUMPED = ScriptOffer("o1", "c1", "email", "smb", at(21))
ON_TIME = ScriptOffer("o2", "c2", "sms", "smb", at(24))
AFTER_THE_JUMP = ScriptOffer("o3", "c3", "web", "consumer", at(0, hours=5))


def test_a_conversion_due_before_a_jump_counts_in_its_final_windows(data_dir: Path) -> None:
    with deployment(data_dir, extra_env=SETTINGS) as service:
        offers, purchases = service.topics["offers"], service.topics["purchases"]
        assert service.cli("topics", "create").returncode == 0
        service.start_worker()
        phase(service, [JUMPED.message(offers)])
        # Last touch: decided once stream time passes 10:23 + 30m, while 10:20's windows
        # are open; nothing arrives until 15:00.
        phase(service, [purchase(purchases, "p1", "c1", at(23), 40.0, is_upsell=True)])
        topic, key, value = ScriptOffer("o1", "c1", "email", "smb", at(111)).message(offers)
        phase(service, [(topic, key, value)])  # o1's event_id again, 90 minutes later
        phase(service, [ON_TIME.message(offers)])  # not late: the duplicate moved nothing
        phase(service, [AFTER_THE_JUMP.message(offers)])

        latest = latest_by_key(read_topic(service.topics["rates"]))
        for label, start in (("10m", at(20)), ("1h", at(0))):
            record = latest[f"{label}|{rfc(start)}|email|smb"]
            assert (
                record["offers"],
                record["conversions"],
                record["revenue"],
                record["final"],
            ) == (1, 1, 40.0, True), record
        samples = service.metrics()
        assert family(samples, "upsell_events_duplicate_total") == {
            frozenset({("topic", offers)}): 1
        }
        assert family(samples, "upsell_events_late_total") == {}
        presented = family(samples, "upsell_offers_presented_total")
        assert Counter(
            {
                dict(k)["channel"]: v
                for k, v in presented.items()
                if "__all__" not in dict(k).values()
            }
        ) == Counter({"email": 1, "sms": 1, "web": 1})
