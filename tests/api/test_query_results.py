"""What a query's values look like in JSON: the same whatever their type or number."""

from __future__ import annotations

from tests.conftest import Sensorlake


def test_every_kind_of_value_comes_back_as_json(lake: Sensorlake) -> None:
    result = lake.query(
        "SELECT TIMESTAMPTZ '2026-05-01 12:00:00.250+00' AS at,"
        " TIMESTAMP '2026-05-01 12:00' AS naive, DATE '2026-05-01' AS day,"
        " 1.25::DECIMAL(6, 2) AS dec, 'hi'::BLOB AS raw,"
        " map(['a', 'b'], [1, 2]) AS m, {'x': 1, 'y': [1.5, NULL]} AS s, 'nan'::DOUBLE AS nan,"
        " NULL::TIMESTAMPTZ AS missing, uuid '00000000-0000-0000-0000-000000000001' AS id")
    assert result["rows"] == [[
        "2026-05-01T12:00:00.250000+00:00", "2026-05-01T12:00:00", "2026-05-01", 1.25, "hi",
        {"a": 1, "b": 2}, {"x": 1, "y": [1.5, None]}, None, None,
        "00000000-0000-0000-0000-000000000001"]]
    assert result["types"][0] == "TIMESTAMP WITH TIME ZONE"


def test_many_rows_are_cut_at_max_rows_and_say_so(lake: Sensorlake) -> None:
    sql = "SELECT range AS n, make_timestamptz(range * 1000000) AS at FROM range(250000)"
    reply = lake.query(sql)  # query.max_rows: 10,000
    assert reply["truncated"] is True
    assert len(reply["rows"]) == 10_000
    assert reply["rows"][-1] == [9_999, "1970-01-01T02:46:39+00:00"]
    exact = lake.query("SELECT * FROM range(10000)")
    assert (exact["truncated"], len(exact["rows"])) == (False, 10_000)


def test_columns_shape_gives_one_array_per_column(lake: Sensorlake) -> None:
    import httpx

    sql = "SELECT range AS n, make_timestamptz(range * 1000000) AS at FROM range(3)"
    reply = httpx.post(f"{lake.url}/api/v1/query", json={"sql": sql, "shape": "columns"},
                       timeout=30).json()
    assert reply["columns"] == ["n", "at"]
    assert reply["data"] == [[0, 1, 2], ["1970-01-01T00:00:00+00:00", "1970-01-01T00:00:01+00:00",
                                          "1970-01-01T00:00:02+00:00"]]
    assert "rows" not in reply
    wrong = httpx.post(f"{lake.url}/api/v1/query", json={"sql": sql, "shape": "table"},
                       timeout=30)
    assert wrong.status_code == 400
    assert "'shape'" in wrong.json()["error"]


def test_columns_and_rows_carry_the_same_values_whatever_their_type(lake: Sensorlake) -> None:
    import httpx

    sql = ("SELECT range AS n, range::TINYINT AS small, range / 3 AS third, (range / 4)::REAL AS"
           " real, CASE WHEN range = 1 THEN 'nan'::DOUBLE WHEN range = 2 THEN 'inf'::DOUBLE"
           " ELSE -0.0 END AS odd, make_timestamptz(1767225600000000 + range * 250000) AS at,"
           " CASE WHEN range = 1 THEN NULL ELSE range END AS gaps, 'x' || range AS text"
           " FROM range(5)")
    rows = httpx.post(f"{lake.url}/api/v1/query", json={"sql": sql}, timeout=30).json()["rows"]
    data = httpx.post(f"{lake.url}/api/v1/query", json={"sql": sql, "shape": "columns"},
                      timeout=30).json()["data"]
    assert [list(r) for r in zip(*data, strict=True)] == rows
    assert data[5][:2] == ["2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00.250000+00:00"]
    assert data[4][1:3] == [None, None]  # NaN and infinity: null, as in rows
    assert data[3][1] == 0.25
