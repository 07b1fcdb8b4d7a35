"""Each detector kind over real decoded readings: what it flags, what it expects instead, and
the state it carries from one batch to the next (and through a checkpoint)."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pytest

from sensorlake.config import DetectorConfig
from sensorlake.detect.detectors import Readings, build
from sensorlake.ingest.identity import IdentityRules
from sensorlake.lake.records import Decoder
from sensorlake.lake.tables import TELEMETRY_SCHEMA
from sensorlake.stream.feed import Delivery, Drained
from sensorlake.stream.partitions import Account, Partition

PARTITION = Partition("TELEMETRY", "TELEMETRY@t0", Account.SERVICE, ("dev.>",), acked=False,
                      subject_prefix="dev")
_seq = 0


def readings(*payloads: dict[str, Any], topic: str = "farm/gh-01/telemetry") -> Readings:
    """Payloads decoded as the pipeline decodes them (one message each)."""
    global _seq
    deliveries = []
    for payload in payloads:
        _seq += 1
        deliveries.append(Delivery(_seq, 1_700_000_000_000_000_000 + _seq * 10**9,
                                   f"dev.{topic.replace('/', '.')}", orjson.dumps(payload), ""))
    batch = Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow()).decode(
        [(PARTITION, Drained(deliveries, _seq, len(deliveries)))])
    return Readings(batch.readings)


def detector(**settings: Any):  # type: ignore[no-untyped-def]
    return build(DetectorConfig(name="d", topic="farm/+/telemetry", **settings))


def flagged(found: tuple[list[Any], list[Any]]) -> list[str | None]:
    return [d.value_text for d in found[0]]


def test_flag_catches_error_codes_sent_as_numbers_and_as_strings() -> None:
    check = detector(field="error_code", kind="flag", not_equal=0)
    found = check.check(readings({"error_code": 0}, {"error_code": 1}, {"error_code": "1"},
                                 {"error_code": "0"}), 0)
    assert flagged(found) == ["1", "1"]
    assert found[0][0].expected == "= 0"
    assert found[1][0].anomalous is False  # the last reading is fine: the alert clears
    # A sensor that sends its codes as text: the column is text, "0" still equals 0.
    text = check.check(readings({"error_code": "E7"}, {"error_code": "0"},
                                {"error_code": "E7"}, topic="farm/gh-03/telemetry"), 0)
    assert flagged(text) == ["E7", "E7"]
    assert text[1][0].anomalous is True


def test_range_takes_400_as_a_number_or_a_string_and_a_normal_reading_clears() -> None:
    check = detector(field="temperature", kind="range", min=-40, max=85)
    found = check.check(readings({"temperature": 400}, {"temperature": 21.5}), 0)
    assert flagged(found) == ["400"]
    assert found[0][0].value == 400.0
    assert found[0][0].expected == "[-40, 85]"
    assert [v.anomalous for v in found[1]] == [False]
    text = check.check(readings({"temperature": "400"}, topic="farm/gh-02/telemetry"), 0)
    assert flagged(text) == ["400"]
    assert text[1][0].device == "gh-02"


def test_text_that_is_no_number_neither_raises_nor_clears_a_range_alert() -> None:
    check = detector(field="temperature", kind="range", max=85)
    found = check.check(readings({"temperature": "400"}, {"temperature": "n/a"},
                                 topic="farm/gh-04/telemetry"), 0)
    assert flagged(found) == ["400"]
    assert [v.anomalous for v in found[1]] == [True]  # "n/a" did not clear it


def test_a_detector_ignores_other_topics_and_readings_without_its_field() -> None:
    check = detector(field="temperature", kind="range", max=85)
    assert check.check(readings({"temperature": 400}, topic="barn/b-1/telemetry"), 0) == ([], [])
    assert check.check(readings({"humidity": 400}), 0) == ([], [])


def test_spike_compares_with_the_last_value_across_batches() -> None:
    check = detector(field="temperature", kind="spike", rate=2.0)
    assert flagged(check.check(readings({"temperature": 20, "ts": 1000},
                                        {"temperature": 21, "ts": 1001}), 0)) == []
    found = check.check(readings({"temperature": 35, "ts": 1002}), 0)  # +14 in 1 s
    assert flagged(found) == ["35"]
    assert found[0][0].expected.startswith("21 ± 2")


def test_stuck_needs_count_equal_values_in_a_row_and_resumes_from_its_state() -> None:
    check = detector(field="co2", kind="stuck", count=4)
    assert flagged(check.check(readings(*[{"co2": 500}] * 3), 0)) == []
    saved = check.dump()
    again = detector(field="co2", kind="stuck", count=4)
    again.load(orjson.loads(orjson.dumps(saved)))  # as a checkpoint stores it
    assert flagged(again.check(readings({"co2": 500}, {"co2": 500}, {"co2": 501}), 0)) == [
        "500", "500"]


def test_outlier_uses_the_median_and_mad_of_the_device_window() -> None:
    check = detector(field="temperature", kind="outlier", window=20, threshold=3.5)
    normal = [{"temperature": 21 + (i % 5) * 0.1} for i in range(20)]
    assert flagged(check.check(readings(*normal), 0)) == []
    found = check.check(readings({"temperature": 21.2}, {"temperature": 30.0}), 0)
    assert flagged(found) == ["30"]
    assert found[0][0].expected.startswith("median 21.2")


def test_silence_fires_once_per_quiet_spell_and_a_reading_ends_it() -> None:
    check = detector(kind="silence", after=10)
    check.check(readings({"temperature": 20}), now_us=0)
    assert check.tick(5_000_000) == ([], [])
    detections, verdicts = check.tick(11_000_000)
    assert [(d.device, d.kind) for d in detections] == [("gh-01", "silence")]
    assert verdicts[0].anomalous
    assert check.tick(20_000_000) == ([], [])  # once per spell
    _, back = check.check(readings({"temperature": 20}), now_us=21_000_000)
    assert [v.anomalous for v in back] == [False]


@pytest.mark.parametrize(("settings", "message"), [
    ({"kind": "range", "field": "t"}, "needs min, max or both"),
    ({"kind": "flag", "field": "t"}, "exactly one of equal and not_equal"),
    ({"kind": "spike", "field": "t"}, "largest normal change"),
    ({"kind": "range", "max": 1}, "checks one field"),
    ({"kind": "range", "field": "t", "min": 5, "max": 1}, "is above max"),
])
def test_a_detector_missing_what_its_kind_needs_is_refused(settings: dict[str, Any],
                                                           message: str) -> None:
    from sensorlake.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        DetectorConfig(name="d", **settings)


def test_readings_numbers_parse_numeric_strings_once() -> None:
    view = readings({"v": "1.5"}, {"v": " 2 "}, {"v": "x"})
    values = view.field("v")
    assert values is not None
    assert values.texts == ["1.5", " 2 ", "x"]
    assert values.numbers[:2].tolist() == [1.5, 2.0]
    assert values.present.all()
    assert pa.types.is_string(view.table["v"].type)
