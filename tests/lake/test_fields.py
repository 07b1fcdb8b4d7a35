"""How JSON keys become columns, how big a reading may be, and who may write as which device."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pytest

from sensorlake.devices.policy import DevicePolicy, _pattern
from sensorlake.ingest.identity import IdentityRules
from sensorlake.lake.fields import FieldLimits, count_fields
from sensorlake.lake.records import DecodedBatch, Decoder
from sensorlake.lake.tables import TELEMETRY_SCHEMA
from sensorlake.stream.feed import Drained
from sensorlake.stream.partitions import MQTT_STREAM, Account, Partition
from tests.lake.test_records import PARTITION, delivery, drained

MQTT = Partition(MQTT_STREAM, f"{MQTT_STREAM}@t0", Account.MQTT, ("$MQTT.msgs.>",), acked=True,
                 subject_prefix="$MQTT.msgs")


def run(*payloads: Any, limits: FieldLimits | None = None, decoder: Decoder | None = None
        ) -> DecodedBatch:
    decoder = decoder or Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow(), limits)
    return decoder.decode([(PARTITION, drained(*(delivery(i, p)
                                                 for i, p in enumerate(payloads, 1))))])


def reasons(batch: DecodedBatch) -> list[str]:
    return [str(r) for r in batch.dead["reason"].to_pylist()]


def test_dots_become_underscores_and_a_collision_is_refused() -> None:
    batch = run({"temp.c": 21.5}, {"a.b": 1, "a": {"b": 2}}, {"a.b": 1, "a_b": 2})
    assert batch.readings["temp_c"].to_pylist() == [21.5, None]
    assert batch.readings["a_b"].to_pylist() == [None, 1.0]
    assert batch.readings["a"].to_pylist() == [None, {"b": 2.0}]
    assert reasons(batch) == ["fields 'a.b' and 'a_b' would both be column 'a_b'"]


def test_names_are_case_insensitive_first_spelling_wins() -> None:
    decoder = Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow())
    run({"temp": 1.0}, decoder=decoder)
    batch = run({"TEMP": 2.0}, {"Temp": 3.0, "temp": 4.0}, decoder=decoder)
    assert "TEMP" not in batch.readings.column_names
    assert batch.readings["temp"].to_pylist() == [2.0]
    assert reasons(batch) == ["fields 'Temp' and 'temp' would both be column 'temp'"]


def test_base_names_in_another_case_keep_their_value_aside() -> None:
    batch = run({"SEQ": 7, "Topic": "x", "stream": "s"})
    row = batch.readings.to_pylist()[0]
    assert row["payload_SEQ"] == 7.0
    assert row["payload_Topic"] == "x"
    assert row["payload_stream"] == "s"
    assert (row["seq"], row["stream"]) == (1, "TELEMETRY")


@pytest.mark.parametrize(("payload", "reason"), [
    ({"": 1}, "a field has an empty name"),
    ({"a\x00b": 1}, "field 'a\\x00b' has a control character in its name"),
    ({"x" * 200: 1}, "has a name of 200 characters (at most 128)"),
    ({"nested": {"": 1}}, "a field has an empty name"),
])
def test_unusable_names_dead_letter_the_reading(payload: dict[str, Any], reason: str) -> None:
    batch = run(payload, {"ok": 1})
    assert len(batch) == 1
    assert reason in reasons(batch)[0]
    assert orjson.loads(batch.dead["raw"].to_pylist()[0]) == payload


def test_unicode_and_leading_digits_are_kept() -> None:
    batch = run({"température": 1, "1wire": 2, "a b": 3, "😀": 4})
    assert {"température", "1wire", "a b", "😀"} <= set(batch.readings.column_names)


def test_depth_and_key_count_are_capped() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = {"d": deep}
    many = {f"k{i}": i for i in range(20)}
    nested_many = {"n": {f"k{i}": i for i in range(20)}}
    batch = run(deep, many, nested_many, {"fine": 1},
                limits=FieldLimits(max_depth=32, max_keys=10, max_columns=1000))
    assert len(batch) == 1
    got = reasons(batch)
    assert "nests deeper than 32 levels (ingest.max_depth)" in got[0]
    assert got[1] == "the reading has 20 fields, more than 10 (ingest.max_keys)"
    assert got[2] == "the reading has 21 fields, more than 10 (ingest.max_keys)"


def test_a_deep_reading_cannot_crash_the_decoder() -> None:
    deep = b'{"v": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}"  # deeper than orjson writes
    batch = run(deep, b"[" + deep + b"]", {"v2": 1})
    assert len(batch) == 1
    assert ["nests deeper" in r for r in reasons(batch)] == [True, True]
    assert batch.dead["raw"].to_pylist() == [deep, b"[" + deep + b"]"]


def test_a_deep_value_under_a_key_first_seen_in_a_refused_reading_is_refused_too() -> None:
    """The key is known to need no renaming, but no column holds it yet: found by the fuzz
    test, whose worker died of a RecursionError here."""
    limits = FieldLimits(max_depth=32, max_keys=3, max_columns=1000)
    decoder = Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow(), limits)
    first = run({"v": 1, "a": 1, "b": 2, "c": 3}, limits=limits, decoder=decoder)
    assert len(first) == 0  # too many keys: refused, so `v` made no column
    deep = b'{"v": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}"
    second = run(deep, {"v": 2.5}, limits=limits, decoder=decoder)
    assert ["nests deeper" in r for r in reasons(second)] == [True]
    assert second.readings["v"].to_pylist() == [2.5]


def test_the_table_stops_growing_at_max_columns() -> None:
    limits = FieldLimits(max_columns=count_fields(TELEMETRY_SCHEMA.as_arrow()) + 3)
    batch = run({"a": 1, "b": 2}, {"c": 3, "d": 4}, {"a": 5}, limits=limits)
    assert batch.readings["a"].to_pylist() == [1.0, 5.0]
    assert "lake.max_columns" in reasons(batch)[0]
    assert "d" not in batch.readings.column_names


def test_an_empty_array_is_a_dead_letter_not_nothing() -> None:
    batch = run([], {"ok": 1})
    assert reasons(batch) == ["payload is an empty array: it holds no reading"]


def test_an_infinite_epoch_is_a_dead_letter() -> None:
    batch = run({"ts": "1e400"}, {"ts": "inf"}, {"ok": 1})
    assert len(batch) == 1
    assert all(r.startswith("field 'ts'") for r in reasons(batch))


def test_through_covers_messages_without_readings() -> None:
    decoder = Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow())
    batch = decoder.decode([(PARTITION, Drained([
        delivery(1, {"v": 1}, qos=1),
        delivery(3, {"v": 3}, qos=0),
        delivery(4, {"v": 4}, subject="_mqtt_bookkeeping.$MQTT.msgs.x"),
    ], 5, 5))])  # seq 2 and 5 were copies the feed skipped
    assert batch.readings["v"].to_pylist() == [1.0, 3.0]
    assert dict(batch.through.seqs) == {"TELEMETRY": 5}


def test_mqtt_stream_subjects_give_the_topic() -> None:
    decoder = Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow())
    batch = decoder.decode([(MQTT, drained(delivery(9, {"v": 1}, subject="$MQTT.msgs.farm.gh-01.t",
                                                    qos=1)))])
    row = batch.readings.to_pylist()[0]
    assert (row["topic"], row["device_id"], row["stream"], row["seq"]) == (
        "farm/gh-01/t", "gh-01", MQTT_STREAM, 9)


def test_an_authenticated_device_writes_only_as_itself_unless_a_gateway() -> None:
    policy = DevicePolicy((_pattern("+/{device}/#"),), frozenset({"gw-1"}), enforced=True)
    decoder = Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow(), policy=policy)
    batch = decoder.decode([(MQTT, drained(
        delivery(1, {"device_id": "gh-02", "v": 1}, subject="$MQTT.msgs.farm.gh-01.t", qos=1),
        delivery(2, {"v": 2}, subject="$MQTT.msgs.farm.gh-01.t", qos=1),
        delivery(3, [{"device_id": "s-7", "v": 3}] * 10, subject="$MQTT.msgs.farm.gw-1.t",
                 qos=1),
        delivery(4, [{"device_id": "s-7", "v": 4}] * 10, subject="$MQTT.msgs.farm.gh-01.t",
                 qos=1),
    ))])
    assert batch.readings["device_id"].to_pylist() == ["gh-01"] + ["s-7"] * 10
    got = reasons(batch)
    assert len(got) == 11
    assert got[0].startswith("the reading names device 'gh-02' but was published by 'gh-01'")
    assert "sensorlake devices gateway gh-01" in got[0]
    assert batch.dead["device_id"].to_pylist()[0] == "gh-01"


def test_http_readings_may_name_any_device() -> None:
    policy = DevicePolicy((_pattern("+/{device}/#"),), frozenset(), enforced=True)
    decoder = Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow(), policy=policy)
    batch = decoder.decode([(PARTITION, drained(delivery(1, {"device_id": "gh-02", "v": 1})))])
    assert batch.readings["device_id"].to_pylist() == ["gh-02"]


def test_topic_patterns_find_the_device() -> None:
    assert _pattern("+/{device}/#").fullmatch("farm/gh-01/a/b").group("device") == "gh-01"
    assert _pattern("+/{device}/#").fullmatch("farm/gh-01").group("device") == "gh-01"
    assert _pattern("site/dev-{device}/+").fullmatch("site/dev-7/t").group("device") == "7"
    assert _pattern("site/dev-{device}/+").fullmatch("site/x-7/t") is None


def test_decoded_rows_carry_their_message() -> None:
    batch = run({"v": 1}, [{"v": 2}, {"v": 3}])
    assert batch.readings.select(["stream", "seq"]).to_pylist() == [
        {"stream": "TELEMETRY", "seq": 1}, {"stream": "TELEMETRY", "seq": 2},
        {"stream": "TELEMETRY", "seq": 2}]
    assert batch.readings.schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_an_authenticated_reading_naming_no_device_is_its_publishers() -> None:
    policy = DevicePolicy((_pattern("site/dev-{device}/+"),), frozenset(), enforced=True)
    decoder = Decoder(IdentityRules("none"), TELEMETRY_SCHEMA.as_arrow(), policy=policy)
    batch = decoder.decode([(MQTT, drained(
        delivery(1, {"v": 1}, subject="$MQTT.msgs.site.dev-7.t", qos=1)))])
    assert batch.readings["device_id"].to_pylist() == ["7"]
    assert batch.dead.num_rows == 0
