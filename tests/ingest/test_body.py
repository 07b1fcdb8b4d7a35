import orjson
import pytest

from sensorlake.errors import IngestError, PayloadTooLarge, UnsupportedMediaType
from sensorlake.ingest.body import pack_messages, parse_body


def test_object_array_and_ndjson_bodies() -> None:
    assert parse_body(b'{"t": 1}', "application/json") == ([b'{"t": 1}'], [])
    accepted, rejected = parse_body(b'[{"t": 1}, 3, {"t": 2}]', "application/json")
    assert [orjson.loads(a) for a in accepted] == [{"t": 1}, {"t": 2}]
    assert [(r.index, r.error) for r in rejected] == [(1, "expected a JSON object, got a number")]
    accepted, rejected = parse_body(b'{"t": 1}\n\n{oops\n{"t": 3}\n', "application/x-ndjson")
    assert accepted == [b'{"t": 1}', b'{"t": 3}']
    assert rejected[0].index == 1
    assert "invalid JSON" in rejected[0].error


def test_ndjson_sent_as_json_is_accepted() -> None:
    accepted, _ = parse_body(b'{"t": 1}\n{"t": 2}', "application/json; charset=utf-8")
    assert len(accepted) == 2


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_other_content_types_are_refused_with_the_fix(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType, match="application/json"):
        parse_body(b"{}", content_type)


@pytest.mark.parametrize("body", [b"", b"  ", b"not json", b"42", b'"text"'])
def test_unusable_bodies_say_why(body: bytes) -> None:
    with pytest.raises(IngestError):
        parse_body(body, "application/json")


def test_packing_respects_the_payload_limit_and_keeps_every_reading() -> None:
    readings = [orjson.dumps({"i": i, "pad": "x" * 50}) for i in range(100)]
    messages = pack_messages(readings, 1024)
    assert all(len(m) <= 1024 for m in messages)
    unpacked = [r for m in messages for r in orjson.loads(m)]
    assert [r["i"] for r in unpacked] == list(range(100))
    with pytest.raises(PayloadTooLarge):
        pack_messages([b"x" * 2000], 1024)
