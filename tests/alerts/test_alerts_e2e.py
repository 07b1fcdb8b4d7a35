"""Detectors and alerts end to end: `sensorlake up` with detectors and channels, readings in
over HTTP and MQTT, and a real local HTTP server standing in for Discord, Slack and a webhook
that checks what arrives — grouped, timed, resolved, silenced, and through a kill -9."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.alerts.hooks import Answer, Hook
from tests.conftest import Sensorlake
from tests.pipeline.test_crash_safety import _kill_tree

pytestmark = pytest.mark.slow

DISCORD = "/api/webhooks/42/discord-token-secret"
SLACK = "/services/T01/B02/slack-token-secret"


def config(hook: Hook) -> str:
    return f'''
[alerts]
group_wait = 1
group_interval = 2
keep_firing_for = 0

[[alerts.channels]]
name = "farm-discord"
type = "discord"
url = "{hook.url(DISCORD)}"

[[alerts.channels]]
name = "farm-slack"
type = "slack"
url = "{hook.url(SLACK)}"

[[alerts.channels]]
name = "storm-hook"
type = "webhook"
url = "{hook.url('/storm')}"
group_by = ["detector"]
group_wait = 1.5

[[alerts.channels]]
name = "beat-hook"
type = "webhook"
url = "{hook.url('/beat')}"

[[detectors]]
name = "sensor-error"
topic = "farm/+/telemetry"
field = "error_code"
kind = "flag"
not_equal = 0
channel = "farm-discord"

[[detectors]]
name = "temperature-range"
topic = "farm/+/telemetry"
field = "temperature"
kind = "range"
min = -40
max = 85
severity = "critical"
channel = "farm-slack"

[[detectors]]
name = "storm"
topic = "storm/+/t"
field = "v"
kind = "range"
max = 10
channel = "storm-hook"

[[rules]]
name = "too_humid"
sql = "SELECT humidity, device_id FROM 'farm/+/telemetry' WHERE humidity > 95"
alert = "farm-discord"

[[detectors]]
name = "heartbeat"
topic = "beat/+/t"
kind = "silence"
after = 2
channel = "beat-hook"
'''


@pytest.fixture(scope="module")
def hook() -> Iterator[Hook]:
    server = Hook().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, hook: Hook) -> Iterator[Sensorlake]:
    root = tmp_path_factory.mktemp("alerts")
    path = root / "sensorlake.toml"
    path.write_text(config(hook))
    lake = Sensorlake(root / "data", flush_interval=0.5, args=("--config", str(path))).start()
    yield lake
    if lake.proc is not None:
        lake.stop()


def of(hook: Hook, path: str, device: str) -> list[Any]:
    """The bodies that reached `path` and name `device`."""
    return [r.body for r in hook.received(path) if device in orjson.dumps(r.body).decode()]


def wait_for(hook: Hook, path: str, device: str, count: int, timeout: float = 15.0
             ) -> list[Any]:
    deadline = time.monotonic() + timeout
    while len(of(hook, path, device)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return of(hook, path, device)


def test_an_error_code_gives_one_discord_alert_with_its_details_then_a_resolved_one(
        farm: Sensorlake, hook: Hook, device: str) -> None:
    topic = f"farm/{device}/telemetry"
    for _ in range(3):  # three bad readings within the group wait: one notification
        assert farm.ingest(topic, {"error_code": 1, "temperature": 21.0}).status_code == 200
    [firing] = wait_for(hook, "/api/v10/webhooks/42/discord-token-secret", device, 1)
    assert firing["content"].startswith(
        f"[FIRING] device={device}, detector=sensor-error: 1 alerts, 3 anomalous readings "
        "from 1 devices")
    [embed] = firing["embeds"]
    assert embed["title"] == f"[FIRING] sensor-error on {device}"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Device"] == device
    assert fields["Field"] == "error_code"
    assert fields["Value"] == "1"
    assert fields["Expected"] == "= 0"
    assert fields["Readings"] == "3"
    assert embed["url"] == f"http://127.0.0.1:{farm.http_port}/#/devices/{device}"
    assert firing["allowed_mentions"] == {"parse": []}
    rows = farm.wait_rows(f"SELECT detector, value_text, expected, seq FROM anomalies "
                          f"WHERE device_id = '{device}'", 3)
    assert [r[:3] for r in rows] == [["sensor-error", "1", "= 0"]] * 3
    assert len({r[3] for r in rows}) == 3  # one row per reading, each with its sequence
    time.sleep(2.5)  # within the group interval, more bad readings change nothing
    assert len(of(hook, DISCORD.replace("/api/", "/api/v10/"), device)) == 1
    assert farm.ingest(topic, {"error_code": 0, "temperature": 21.0}).status_code == 200
    resolved = wait_for(hook, DISCORD.replace("/api/", "/api/v10/"), device, 2)[1]
    assert resolved["content"].startswith(f"[RESOLVED] device={device}, detector=sensor-error")
    assert resolved["embeds"][0]["title"] == f"[RESOLVED] sensor-error on {device}"


@pytest.mark.parametrize("value", [400, "400"], ids=["number", "string"])
def test_400_degrees_gives_one_slack_alert_and_an_anomaly_row(
        farm: Sensorlake, hook: Hook, device: str, value: object) -> None:
    farm.mqtt_publish(f"farm/{device}/telemetry",
                      [orjson.dumps({"temperature": value, "error_code": 0})])
    [message] = wait_for(hook, SLACK, device, 1)
    assert message["text"] == (f"[FIRING] device={device}, detector=temperature-range: 1 alerts, "
                               "1 anomalous readings from 1 devices")
    fields = [f["text"] for f in message["blocks"][1]["fields"]]
    assert fields[:5] == [f"*Device*\n{device}", "*Detector*\ntemperature-range (firing)",
                          "*Field*\ntemperature", "*Value*\n400", "*Expected*\n[-40, 85]"]
    assert message["blocks"][-1]["elements"][0]["text"].startswith("<http://127.0.0.1:")
    rows = farm.wait_rows("SELECT detector, kind, value, value_text, severity, topic FROM "
                          f"anomalies WHERE device_id = '{device}'", 1)
    assert rows == [["temperature-range", "range", 400.0, "400", "critical",
                     f"farm/{device}/telemetry"]]
    listed = httpx.get(f"{farm.url}/api/v1/anomalies",
                       params={"device": device, "detector": "temperature-range"}).json()
    assert [a["value"] for a in listed["anomalies"]] == [400.0]


def test_a_rule_with_an_alert_raises_one_and_a_reading_it_does_not_match_clears_it(
        farm: Sensorlake, hook: Hook, device: str) -> None:
    topic = f"farm/{device}/telemetry"
    farm.ingest(topic, {"humidity": 99.0, "error_code": 0})
    [firing] = wait_for(hook, DISCORD.replace("/api/", "/api/v10/"), device, 1)
    [embed] = firing["embeds"]
    assert embed["title"] == f"[FIRING] too_humid on {device}"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert (fields["Field"], fields["Value"]) == ("humidity", "99.0")
    rows = farm.wait_rows(f"SELECT detector, kind, value FROM anomalies WHERE device_id = "
                          f"'{device}'", 1)
    assert rows == [["too_humid", "rule", 99.0]]
    farm.ingest(topic, {"humidity": 60.0, "error_code": 0})
    resolved = wait_for(hook, DISCORD.replace("/api/", "/api/v10/"), device, 2)[1]
    assert resolved["embeds"][0]["title"] == f"[RESOLVED] too_humid on {device}"


def test_a_storm_of_1000_bad_readings_from_50_devices_is_one_message_with_the_counts(
        farm: Sensorlake, hook: Hook, device: str) -> None:
    before = len(hook.received("/storm"))
    readings = [{"device_id": f"{device}-{n % 50}", "v": 100 + n} for n in range(1000)]
    for start in range(0, 1000, 100):  # ten requests within a second
        assert farm.ingest(f"storm/{device}/t", readings[start:start + 100]).status_code == 200
    time.sleep(4)  # past the group wait, and another group interval
    storm = hook.received("/storm")[before:]
    assert len(storm) == 1, [m.body["readings"] for m in storm]
    body = storm[0].body
    assert body["version"] == "1"
    assert body["status"] == "firing"
    assert body["group_labels"] == {"detector": "storm"}
    assert (body["readings"], body["devices"], body["firing"]) == (1000, 50, 50)
    assert {a["device"] for a in body["alerts"]} == {f"{device}-{n}" for n in range(50)}
    counted = farm.wait_rows(f"SELECT count(*) FROM anomalies WHERE detector = 'storm' AND "
                             f"device_id LIKE '{device}-%' HAVING count(*) >= 1000", 1)
    assert counted == [[1000]]
    farm.ingest(f"storm/{device}/t", [{"device_id": f"{device}-{n}", "v": 1} for n in range(50)])
    deadline = time.monotonic() + 10
    while len(hook.received("/storm")) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    resolved = hook.received("/storm")[before + 1].body
    assert resolved["status"] == "resolved"
    assert resolved["resolved"] == 50


def test_a_silent_device_raises_a_heartbeat_alert_that_resolves_when_it_reports(
        farm: Sensorlake, hook: Hook, device: str) -> None:
    farm.ingest(f"beat/{device}/t", {"ok": 1})
    [silent] = wait_for(hook, "/beat", device, 1, timeout=10)
    assert silent["status"] == "firing"
    [alert] = silent["alerts"]
    assert (alert["detector"], alert["kind"], alert["expected"]) == (
        "heartbeat", "silence", "a reading every 2 s")
    rows = farm.wait_rows(f"SELECT kind, seq FROM anomalies WHERE device_id = '{device}'", 1)
    assert rows == [["silence", None]]  # no stream message carries it
    deadline = time.monotonic() + 10  # it beats again, and goes on beating
    while len(of(hook, "/beat", device)) < 2 and time.monotonic() < deadline:
        farm.ingest(f"beat/{device}/t", {"ok": 1})
        time.sleep(0.5)
    back = of(hook, "/beat", device)
    assert [b["status"] for b in back] == ["firing", "resolved"], back


def test_a_silenced_device_sends_nothing_and_its_alert_is_still_listed(
        farm: Sensorlake, hook: Hook, device: str, tmp_path: Path) -> None:
    quiet, loud = f"{device}-quiet", f"{device}-loud"
    out = farm.cli("alerts", "silence", quiet, "--for", "2h", *farm.extra_args)
    assert f"{quiet} is silenced until " in out.stdout
    for name in (quiet, loud):
        farm.ingest(f"farm/{name}/telemetry", {"error_code": 3})
    wait_for(hook, DISCORD.replace("/api/", "/api/v10/"), loud, 1)
    time.sleep(1.5)
    assert of(hook, DISCORD.replace("/api/", "/api/v10/"), quiet) == []
    listed = httpx.get(f"{farm.url}/api/v1/alerts").json()
    mine = {a["device"]: a for a in listed["alerts"] if a["device"] in (quiet, loud)}
    assert mine[quiet]["silenced"] is True
    assert mine[quiet]["status"] == "firing"
    assert mine[loud]["silenced"] is False
    assert quiet in {s["device"] for s in listed["silences"]}
    shown = farm.cli("alerts", "list", "--format", "json", *farm.extra_args)
    assert {r[2] for r in orjson.loads(shown.stdout)["rows"]} >= {quiet, loud}


def test_every_attempt_is_in_the_alert_log_and_config_show_masks_the_tokens(
        farm: Sensorlake, hook: Hook) -> None:
    assert farm.cli("alerts", "test", "farm-slack", *farm.extra_args).stdout.startswith(
        "sent a test message to farm-slack")
    assert hook.received(SLACK)[-1].body["text"] == "[TEST] sensorlake channel 'farm-slack' works"
    rows = farm.wait_rows("SELECT channel, kind, status, attempts, response_code FROM alert_log "
                          "WHERE kind = 'test'", 1)
    assert rows == [["farm-slack", "test", "sent", 1, 200]]
    shown = farm.cli("config", "show", *farm.extra_args).stdout
    assert "discord-token-secret" not in shown
    assert "slack-token-secret" not in shown
    urls = [c["url"] for c in orjson.loads(shown)["alerts"]["channels"]]
    assert urls[0] == hook.url("/api/webhooks/42/***")
    assert "discord-token-secret" not in farm.log()


def test_restart_in_a_storm_neither_loses_nor_repeats_a_notification(
        fresh: Sensorlake, hook: Hook, tmp_path: Path) -> None:
    """The first notification is queued while the endpoint fails; every process is killed;
    after the restart it is delivered once, the storm goes on without a second one, and the
    recovery gives one resolved message. A stuck detector's run carries across the kill."""
    path = tmp_path / "sensorlake.toml"
    path.write_text(config(hook) + '''
[[detectors]]
name = "stuck"
topic = "storm/+/t"
field = "s"
kind = "stuck"
count = 6
channel = "storm-hook"
''')
    fresh.flush_interval = 0.3
    fresh.extra_args = ("--config", str(path))
    fresh.start()
    before = len(hook.received("/storm"))
    hook.always = Answer(503)
    for n in range(5):
        fresh.ingest("storm/r/t", [{"device_id": f"r-{d}", "v": 50 + n, "s": 7} for d in range(5)])
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while not hook.received("/storm", ok=False)[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hook.received("/storm", ok=False)[before:], "no notification was attempted"
    _kill_tree(fresh)  # restarts it
    hook.always = None
    for n in range(3):  # the storm goes on; the stuck run reaches 6 only across the kill
        fresh.ingest("storm/r/t", [{"device_id": f"r-{d}", "v": 60 + n, "s": 7} for d in range(5)])
        time.sleep(0.3)
    time.sleep(3)
    fresh.ingest("storm/r/t", [{"device_id": f"r-{d}", "v": 1, "s": d} for d in range(5)])
    time.sleep(4)
    sent = [r.body for r in hook.received("/storm")[before:]  # this test's devices only
            if all(a["device"].startswith("r-") for a in r.body["alerts"])]
    storm = [b for b in sent if b["group_labels"] == {"detector": "storm"}]
    assert [b["status"] for b in storm] == ["firing", "resolved"], [
        (b["status"], b["number"], b["created_at"], b["firing"], b["resolved"]) for b in storm]
    assert storm[0]["devices"] == 5
    stuck = [b for b in sent if b["group_labels"] == {"detector": "stuck"}]
    assert [b["status"] for b in stuck][:1] == ["firing"], sent
    rows = fresh.rows("SELECT detector, count(*), count(DISTINCT (stream, seq, device_id)) "
                      "FROM anomalies GROUP BY 1 ORDER BY 1")
    # 8 bad readings × 5 devices; the stuck run of 6, 7 and 8 × 5 devices; each once
    assert rows == [["storm", 40, 40], ["stuck", 15, 15]]
