"""AWS IoT SQL as rules are written for AWS, evaluated over a batch: every function, the
operators, nested fields, Undefined as NULL, topic filters with + and #, and a clear refusal of
what the dialect lacks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from sensorlake.config import RuleConfig, load_config
from sensorlake.errors import ConfigError
from sensorlake.rules.dialect import RuleSqlError, java_pattern
from sensorlake.rules.evaluate import Evaluator, RuleFailed, compile_rule

AT = datetime(2026, 1, 10, 6, 0, tzinfo=UTC)
EVALUATOR = Evaluator()


def readings(*payloads: dict[str, Any], topic: str = "sensor/weather/bern") -> pa.Table:
    rows = []
    for i, payload in enumerate(payloads):
        topic_of = payload.pop("_topic", topic)
        rows.append({"topic": topic_of, "device_id": payload.pop("_device", "bern"), "ts": AT,
                     "received_at": AT, "seq": i + 1, "stream": "TELEMETRY", **payload})
    return pa.Table.from_pylist(rows)


def run(sql: str, *payloads: dict[str, Any], topic: str = "sensor/weather/bern"
        ) -> list[dict[str, Any]]:
    rule = compile_rule(RuleConfig(name="r", sql=sql, table="t"))
    result = EVALUATOR.evaluate(rule, readings(*payloads, topic=topic))
    return [{k: v for k, v in row.items() if k not in ("seq", "stream", "ts")}
            for row in result.to_pylist()]


def one(expression: str, **payload: Any) -> Any:
    (row,) = run(f"SELECT {expression} AS x FROM '#'", dict(payload))
    return row["x"]


def test_the_weather_rule_flattens_nested_fields_and_filters() -> None:
    sql = ("SELECT weather_station, air_temperature.value AS air_temperature_value, "
           "air_temperature.quality AS air_temperature_quality, time FROM 'sensor/weather/+' "
           "WHERE air_temperature.value < -5")
    rows = run(sql, {"weather_station": "a", "air_temperature": {"value": -12.5, "quality": "1"},
                     "time": "t1"},
               {"weather_station": "b", "air_temperature": {"value": 2.0, "quality": "1"},
                "time": "t2"})
    assert rows == [{"weather_station": "a", "air_temperature_value": -12.5,
                     "air_temperature_quality": "1", "time": "t1"}]


def test_star_is_the_payload_and_topic_comes_from_topic() -> None:
    rows = run("SELECT topic() AS topic, * FROM 'sensor/+/+'", {"temperature": 21.5})
    assert rows == [{"topic": "sensor/weather/bern", "device_id": "bern", "temperature": 21.5}]


@pytest.mark.parametrize(("topic_filter", "matches"), [
    ("sensor/weather/bern", True), ("sensor/+/bern", True), ("sensor/#", True), ("#", True),
    ("sensor/+", False), ("+/+/+", True), ("sensor/weather/+/x", False), ("other/#", False),
    ("sensor/weather/bern/#", True)])
def test_topic_filters_match_as_mqtt_does(topic_filter: str, matches: bool) -> None:
    rows = run(f"SELECT temperature FROM '{topic_filter}'", {"temperature": 1.0})
    assert bool(rows) is matches


def test_a_missing_field_is_undefined_and_reads_as_null() -> None:
    rows = run("SELECT nothing AS a, air.missing AS b, isUndefined(nothing) AS c, "
               "isNull(air.value) AS d FROM '#'", {"air": {"value": 3}})
    assert rows == [{"a": None, "b": None, "c": True, "d": False}]
    assert run("SELECT x FROM '#' WHERE nothing > 3", {"x": 1}) == []
    assert run("SELECT nothing, air.gone FROM '#'", {"x": 1}) == [{"nothing": None, "gone": None}]


def test_select_value_gives_the_bare_value() -> None:
    assert run("SELECT VALUE air.value FROM '#'", {"air": {"value": 3}}) == [{"value": 3}]


@pytest.mark.parametrize(("expression", "payload", "expected"), [
    ("topic()", {}, "sensor/weather/bern"), ("topic(1)", {}, "sensor"),
    ("topic(3)", {}, "bern"), ("topic(4)", {}, None),
    ("clientid()", {}, "bern"), ("principal()", {}, "bern"),
    ("abs(v)", {"v": -2.5}, 2.5), ("ceil(v)", {"v": 1.2}, 2), ("floor(v)", {"v": 1.8}, 1),
    ("round(v)", {"v": 2.5}, 3), ("trunc(v, 1)", {"v": 2.56}, 2.5), ("mod(v, 3)", {"v": 7}, 1),
    ("power(v, 2)", {"v": 3}, 9), ("sqrt(v)", {"v": 16}, 4), ("exp(v)", {"v": 0}, 1),
    ("ln(v)", {"v": 1}, 0), ("log(v)", {"v": 100}, 2), ("sign(v)", {"v": -3}, -1),
    ("concat(a, '-', b)", {"a": "x", "b": "y"}, "x-y"), ("lower(a)", {"a": "AbC"}, "abc"),
    ("upper(a)", {"a": "AbC"}, "ABC"), ("length(a)", {"a": "abcd"}, 4),
    ("substring(a, 1)", {"a": "hello"}, "ello"), ("substring(a, 1, 3)", {"a": "hello"}, "el"),
    ("trim(a)", {"a": " x "}, "x"), ("ltrim(a)", {"a": " x "}, "x "),
    ("rtrim(a)", {"a": " x "}, " x"), ("replace(a, 'l', 'L')", {"a": "hello"}, "heLLo"),
    ("startswith(a, 'he')", {"a": "hello"}, True), ("endswith(a, 'lo')", {"a": "hello"}, True),
    ("indexof(a, 'l')", {"a": "hello"}, 2), ("indexof(a, 'z')", {"a": "hello"}, -1),
    ("regexp_matches(a, 'l+')", {"a": "hello"}, True),
    ("regexp_replace(a, 'l', 'L')", {"a": "hello"}, "heLLo"),
    ("regexp_substr(a, '[0-9]+')", {"a": "ab123cd"}, "123"),
    ("lpad(a, 2)", {"a": "x"}, "  x"), ("rpad(a, 2)", {"a": "x"}, "x  "),
    ("isNull(a)", {"a": None}, True), ("isUndefined(a)", {"b": 1}, True),
    ("cast(a AS INT)", {"a": "42"}, 42), ("cast(a AS DECIMAL)", {"a": "4.5"}, 4.5),
    ("cast(a AS STRING)", {"a": 7}, "7"), ("cast(a AS BOOL)", {"a": "true"}, True),
    ("cast(a AS INT)", {"a": "not a number"}, None),
    ("get(*, 'wind-speed')", {"wind-speed": 3}, 3), ("get(air, 'value')", {"air": {"value": 5}},
                                                          5),
    ("get(list, 1)", {"list": [10, 20]}, 20),
    ("get_or_default(air, 'nope', 9)", {"air": {"value": 5}}, 9),
    ("parse_time('yyyy-MM-dd HH:mm:ss', 0)", {}, "1970-01-01 00:00:00"),
    ("parse_time('yyyy-MM-dd''T''HH:mm', 1767967200000, 'Europe/Zurich')", {},
     "2026-01-09T15:00"),
    ("time_to_epoch('2026-01-10 06:00:00', 'yyyy-MM-dd HH:mm:ss')", {}, 1768024800000),
    ("encode(a, 'base64')", {"a": "hi"}, "aGk="), ("decode(a, 'base64')", {"a": "aGk="}, "hi"),
    ("a + b * 2 - 1", {"a": 1, "b": 3}, 6), ("b / 2", {"b": 3}, 1.5), ("b % 2", {"b": 3}, 1),
    ("a IN (1, 2)", {"a": 2}, True), ("NOT (a = 1)", {"a": 2}, True),
    ("a IS NOT NULL AND b IS NULL", {"a": 1}, True), ("a <> 1 OR a >= 5", {"a": 1}, False),
    ("CASE a WHEN 1 THEN 'one' ELSE 'other' END", {"a": 1}, "one"),
    ("CASE WHEN a > 0 THEN 'pos' ELSE 'neg' END", {"a": -1}, "neg"),
])
def test_every_function_and_operator(expression: str, payload: dict[str, Any],
                                     expected: Any) -> None:
    got = one(expression, **payload)
    if isinstance(expected, float) or isinstance(got, float):
        assert got == pytest.approx(expected)
    else:
        assert got == expected


def test_timestamp_and_newuuid_are_fresh_values() -> None:
    rows = run("SELECT timestamp() AS t, newuuid() AS u FROM '#'", {}, {})
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert all(abs(r["t"] - now_ms) < 60_000 for r in rows)
    assert len({r["u"] for r in rows}) == 2
    assert all(len(r["u"]) == 36 for r in rows)


def test_unaliased_expressions_are_named_like_aws_names_them() -> None:
    rule = compile_rule(RuleConfig(name="r", sql="SELECT topic(2), upper(s), a + 1 FROM '#'",
                                   table="t"))
    result = EVALUATOR.evaluate(rule, readings({"a": 1, "s": "x"}))
    assert result.column_names[:3] == ["topic", "upper", "_3"]


@pytest.mark.parametrize(("sql", "message", "near"), [
    ("SELECT foo(a) FROM '#'", "unknown function foo()", "foo(a)"),
    ("SELECT flor(a) FROM '#'", "did you mean floor()?", "flor(a)"),
    ("SELECT count(*) FROM '#'", "count() is an aggregate", "count(*)"),
    ("SELECT a FROM '#' GROUP BY a", "GROUP BY is not part of AWS IoT SQL", None),
    ("SELECT a FROM '#' ORDER BY a", "ORDER BY / LIMIT / DISTINCT is not part", None),
    ("SELECT a FROM t1 JOIN t2 ON true", "FROM takes one topic filter", None),
    ("SELECT a FROM (SELECT 1)", "FROM takes one topic filter", None),
    ("SELECT a FROM 'a/#/b'", "'#' must be the last level", "'a/#/b'"),
    ("SELECT cast(a AS DATE) FROM '#'", "cast to DATE is not supported", "cast(a AS DATE)"),
    ("SELECT (SELECT 1) FROM '#'", "no subquery expression", None),
    ("SELECT substring(a) FROM '#'", "substring() takes 2 or 3 argument(s), not 1", None),
    ("SELECT encode(a, 'hex') FROM '#'", "supports only the 'base64' encoding", None),
    ("SELECT parse_time(a, 0) FROM '#'", "date pattern must be a string constant", None),
    ("SELECT parse_time('yyyy-QQ', 0) FROM '#'", "letter 'Q' is not supported", None),
    ("SELECT get(a, b) FROM '#'", "key must be a constant", None),
    ("SELECT VALUE a, b FROM '#'", "SELECT VALUE takes exactly one expression", None),
    ("SELEC a FROM '#'", "SQL syntax error", None),
    ("SELECT a FROM '#'; SELECT b FROM '#'", "one SELECT statement", None),
    ("WITH x AS (SELECT 1) SELECT a FROM '#'", "WITH is not part of AWS IoT SQL", None),
])
def test_what_the_dialect_lacks_is_refused_with_the_rule_and_the_place(
        sql: str, message: str, near: str | None) -> None:
    with pytest.raises(RuleSqlError) as caught:
        compile_rule(RuleConfig(name="cold", sql=sql, table="t"))
    text = str(caught.value)
    assert "rule 'cold'" in text
    assert caught.value.key == "rules.cold.sql"
    assert message in text, text
    if near is not None:
        assert f"near {sql[sql.index(near):sql.index(near) + 20]!r}" in text, text
        assert "line 1, column " in text


@pytest.mark.parametrize(("rules", "key", "message"), [
    ([{"name": "a", "sql": "SELECT a FROM '#'"}], "rules.a", "has no action"),
    ([{"name": "a", "sql": "SELECT a FROM '#'", "table": "telemetry"}], "rules.a.table",
     "a table sensorlake writes itself"),
    ([{"name": "a", "sql": "SELECT a FROM '#'", "table": "x"},
      {"name": "b", "sql": "SELECT a FROM '#'", "table": "x"}], "rules.b.table",
     "rule 'a' writes table 'x' already"),
    ([{"name": "a", "sql": "SELECT a FROM '#'", "table": "x"},
      {"name": "a", "sql": "SELECT a FROM '#'", "table": "y"}], "rules.a", "two rules"),
    ([{"name": "a", "sql": "SELECT a FROM '#'", "table": "x", "kafka": "k"}], "rules[0].kafka",
     "unknown setting"),
    ([{"name": "a", "sql": "SELECT a FROM '#'", "table": "x", "partition_by": "week(ts)"}],
     "rules.a.partition_by", "not a field or a transform"),
    ([{"name": "a", "sql": "SELECT a FROM '#'", "http": "ftp://x"}], "rules.a.http",
     "not an http(s) URL"),
    ([{"name": "a", "sql": "SELECT a FROM '#'", "republish": "out/+/x"}], "rules.a.republish",
     "not a topic to publish to"),
    ([{"name": "a", "sql": "SELECT a FROM '#'", "republish": "out/${nope()}"}],
     "rules.a.republish", "cannot substitute"),
    ([{"name": "Bad Name", "sql": "SELECT a FROM '#'", "table": "x"}], "rules[0].name",
     "should match pattern"),
    ([{"name": "a", "sql": "SELECT nope(a) FROM '#'", "table": "x"}], "rules.a.sql",
     "unknown function nope()"),
])
def test_a_bad_rule_is_refused_as_the_config_loads(rules: list[dict[str, Any]], key: str,
                                                    message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"rules": rules}, environ={})
    assert caught.value.key == key, caught.value
    assert message in str(caught.value)


def test_a_runtime_error_names_the_rule() -> None:
    rule = compile_rule(RuleConfig(name="unpack", sql="SELECT decode(v, 'base64') AS r FROM '#'",
                                   table="t"))
    with pytest.raises(RuleFailed) as caught:
        EVALUATOR.evaluate(rule, readings({"v": "abc"}))
    assert "rule 'unpack'" in str(caught.value)
    assert "base64" in str(caught.value)


def test_java_date_patterns_become_strftime() -> None:
    assert java_pattern("yyyy-MM-dd'T'HH:mm:ss.SSSZ") == "%Y-%m-%dT%H:%M:%S.%g%z"
    assert java_pattern("dd/MM/yy hh:mm a") == "%d/%m/%y %I:%M %p"
