"""Active rate-drop alerts as /api/rates shows them: the fired record of the alerts topic
while the drop lasts, the series alone after a restart, nothing once it resolved."""

from __future__ import annotations

from stream_app.serving.web import alert_document
from tests.unit.test_pipeline_drops import SETTINGS, Driver, FakeTable


def test_an_alert_is_active_from_fired_to_resolved_across_a_restart() -> None:
    table = FakeTable()
    driver = Driver(table)
    for index in range(6):
        driver.window(index, 400, 40)
    assert driver.pipeline.active_alerts() == []
    for index in range(6, 10):
        driver.window(index, 400, 10)
    (published,) = [record for _, _, record in driver.outputs]
    assert published["state"] == "fired"
    (active,) = driver.pipeline.active_alerts()
    assert (active.label, active.key) == ("1m", ("email", "smb"))
    assert alert_document(active) == published

    # Another worker takes the board over: the detector's state says the drop is active,
    # the rates it fired with were published by the first worker.
    restarted = Driver(table)
    restarted.offset = driver.offset
    restarted.pipeline.load(SETTINGS.topic_partials, 0)
    (still,) = restarted.pipeline.active_alerts()
    assert still.fired is None
    assert alert_document(still) == {
        "state": "fired",
        "window": "1m",
        "channel": "email",
        "segment": "smb",
    }
    for index in range(10, 16):
        restarted.window(index, 400, 40)
    assert [record["state"] for _, _, record in restarted.outputs] == ["resolved"]
    assert restarted.pipeline.active_alerts() == []
