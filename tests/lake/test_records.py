"""Decoding stream messages into Arrow: the fast C++ path and the careful path must agree."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest

from sensorlake.ingest.identity import IdentityRules
from sensorlake.lake.records import Batch, Decoder, batch_to_arrow, evolve_schema
from sensorlake.lake.tables import TELEMETRY_SCHEMA
from sensorlake.stream.feed import Delivery, Drained
from sensorlake.stream.partitions import Account, Partition

NOW_US = 1_790_000_000_000_000
PARTITION = Partition("TELEMETRY", "TELEMETRY@t0", Account.SERVICE, ("dev.>",), acked=False,
                      subject_prefix="dev")


def delivery(seq: int, payload: object, subject: str = "dev.farm.gh-01.telemetry",
             qos: int = -1) -> Delivery:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Delivery(seq, NOW_US * 1000, subject, data, f"$JS.ACK.T.c.1.{seq}.{seq}.0.0", qos)


def drained(*deliveries: Delivery) -> Drained:
    """As the feed hands them over (copies past a cutover are the feed's to skip)."""
    return Drained(list(deliveries), max((d.seq for d in deliveries), default=0),
                   len(deliveries))


def decode(*payloads: object) -> Batch:
    decoder = Decoder(IdentityRules(), TELEMETRY_SCHEMA.as_arrow())
    batch = Batch()
    for seq, payload in enumerate(payloads, start=1):
        decoder.add(batch, PARTITION, delivery(seq, payload))
    return batch


def to_table(batch: Batch) -> tuple[pa.Table, list[tuple[int, str]]]:
    schema = evolve_schema(batch.payloads, TELEMETRY_SCHEMA.as_arrow())
    table, conflicts = batch_to_arrow(batch, schema)
    return table.sort_by([("device_id", "ascending"), ("ts", "ascending")]), conflicts


def test_first_seen_type_wins_and_later_conflicts_are_reported() -> None:
    table, conflicts = to_table(decode({"t": 1}, {"t": "400"}, {"t": "hot"}, [{"t": 2}]))
    assert table.column("t").to_pylist() == [1.0, 400.0, 2.0]
    assert conflicts == [(2, 'field \'t\': cannot read "hot" as double')]


def test_booleans_are_never_read_as_numbers() -> None:
    table, conflicts = to_table(decode({"t": 1.5}, {"t": True}))
    assert table.column("t").to_pylist() == [1.5]
    assert [row for row, _ in conflicts] == [1]


def test_payload_identity_fields_fill_the_base_columns() -> None:
    table, _ = to_table(decode({"device_id": "probe-9", "ts": 1_790_000_000, "topic": "x"}))
    row = table.to_pylist()[0]
    assert row["device_id"] == "probe-9"
    assert row["ts"].timestamp() == 1_790_000_000
    assert row["topic"] == "farm/gh-01/telemetry"
    assert row["payload_topic"] == "x"  # a payload field may not overwrite a base column
    assert "ts" not in [n for n in table.column_names if n.startswith("payload_")]


def test_new_columns_keep_payload_order_and_rows_are_sorted() -> None:
    batch = decode({"device_id": "b", "zeta": 1, "alpha": 2}, {"device_id": "a", "mid": 3})
    table, _ = to_table(batch)
    assert table.column_names[6:] == ["zeta", "alpha", "mid"]
    assert table.column("device_id").to_pylist() == ["a", "b"]


def test_undecodable_and_non_object_input_become_dead_letters() -> None:
    batch = decode(b"{oops", b"42", [1, {"ok": 1}])
    assert len(batch) == 1
    assert batch.dead.raws == [b"{oops", b"42", b"1"]
    assert batch.dead.reasons[1] == "payload is not a JSON object or array"


def test_uniform_arrays_decode_exactly_like_item_by_item() -> None:
    import sensorlake.lake.records as records

    cases = [
        [{"device_id": f"d{i}", "v": i} for i in range(20)],
        [{"v": i, "ts": 1_790_000_000 + i} for i in range(20)],  # seconds
        [{"v": i, "ts": 1_790_000_000_000 + i} for i in range(20)],  # milliseconds
        [{"v": i, "ts": 1_790_000_000_000_000 + i} for i in range(20)],  # microseconds
        [{"v": i, "ts": "2026-01-01T00:00:00Z"} for i in range(20)],  # strings: item path
        [{"device_id": "", "v": 1}] * 10,  # empty device falls back to the topic
    ]
    for items in cases:
        fast = to_table(decode(items))[0]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(records, "_UNIFORM_MIN", 10**9)
            slow = to_table(decode(items))[0]
        assert fast.equals(slow), items[0]


def test_out_of_range_epochs_in_an_array_are_dead_lettered_one_by_one() -> None:
    items = [{"v": i, "ts": 1_790_000_000} for i in range(9)] + [{"v": 9, "ts": -1e20}]
    batch = decode(items)
    assert len(batch) == 9
    assert batch.dead.reasons == ["field 'ts': epoch -1e+20 is outside 1970–2200"]


def test_schema_growth_from_many_shapes_is_what_value_by_value_inference_gives() -> None:
    """evolve_schema infers one value per distinct shape: the answer must be that of merging
    every value's type (kind by kind, the first seen kind first), conflicts and growth
    included."""
    import random

    from sensorlake.lake.records import evolve_schema
    from sensorlake.lake.schema import infer_type, merge_types

    rng = random.Random(3)
    leaves: list[object] = [1, 2.5, "x", True, None, [], {}, [1, "a"], ["b"], {"k": 1}]

    def value(depth: int) -> object:
        if depth == 0 or rng.random() < 0.4:
            return rng.choice(leaves)
        if rng.random() < 0.5:
            return [value(depth - 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice("abc"): value(depth - 1) for _ in range(rng.randint(0, 3))}

    for _ in range(30):
        payloads = [{"v": value(3)} for _ in range(40)]
        expected = None
        values = [p["v"] for p in payloads]
        for kind in dict.fromkeys(map(type, values)):
            for v in (values if kind in (dict, list) else
                      [next(v for v in values if type(v) is kind)]):
                if type(v) is kind:
                    expected = merge_types(expected, infer_type(v))
        got = evolve_schema(payloads, pa.schema([]))
        assert (got.field("v").type if "v" in got.names else None) == expected
