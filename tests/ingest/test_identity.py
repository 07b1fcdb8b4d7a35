from datetime import UTC, datetime

import pytest

from sensorlake.ingest.identity import IdentityRules, TimeValueError, parse_time_us

WHEN = datetime(2026, 5, 17, 8, 30, 0, tzinfo=UTC)
WHEN_US = int(WHEN.timestamp() * 1_000_000)


@pytest.mark.parametrize(
    "value",
    [
        WHEN.timestamp(),  # seconds
        int(WHEN.timestamp() * 1_000),  # milliseconds
        WHEN_US,  # microseconds
        WHEN_US * 1_000,  # nanoseconds
        "2026-05-17T08:30:00Z",
        "2026-05-17T10:30:00+02:00",
        "2026-05-17 08:30:00",  # naive means UTC
        str(int(WHEN.timestamp())),  # epoch as a string
    ],
)
def test_event_time_formats_are_detected(value: object) -> None:
    assert parse_time_us(value) == WHEN_US


@pytest.mark.parametrize("value", ["yesterday", True, [1], "99999-01-01", -5e20])
def test_unreadable_times_are_refused(value: object) -> None:
    with pytest.raises(TimeValueError):
        parse_time_us(value)


def test_device_id_prefers_the_payload_then_the_topic_level() -> None:
    rules = IdentityRules("topic:1")
    assert rules.device_id({"deviceId": "probe-7"}, "farm/gh-01/telemetry") == "probe-7"
    assert rules.device_id({"thing": 42}, "farm/gh-01/telemetry") == "42"
    assert rules.device_id({"t": 1}, "farm/gh-01/telemetry") == "gh-01"
    assert rules.device_id({"t": 1}, "lonely") is None
    assert IdentityRules("none").device_id({"t": 1}, "farm/gh-01/x") is None


def test_bad_ts_is_an_error_but_bad_aliases_fall_back_to_arrival() -> None:
    rules = IdentityRules()
    with pytest.raises(TimeValueError):
        rules.event_time_us({"ts": "soon"}, 5)
    assert rules.event_time_us({"time": "12 o'clock"}, 5) == 5
    assert rules.event_time_us({"timestamp": "2026-05-17T08:30:00Z"}, 5) == WHEN_US
    assert rules.event_time_us({}, 5) == 5
