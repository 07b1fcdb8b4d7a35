"""A catalog that cannot be read is an outage (503 naming the catalog), never "no such table"."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sensorlake.config import load_config
from sensorlake.errors import LakeError
from sensorlake.lake.catalog import mask_uri
from sensorlake.query.engine import QueryEngine
from tests.conftest import Sensorlake, free_port


def _engine(data_dir: Path, **lake: object) -> QueryEngine:
    return QueryEngine(load_config(None, {"data_dir": str(data_dir), "lake": lake}, environ={}))


def _spoil(path: Path) -> bytes:
    """Overwrite the file in place (same inode, same size) and return what it held.

    In place, because a process that has it open keeps reading a replaced file's old inode; and
    garbage, because tests run as root, for whom a chmod 000 blocks nothing.
    """
    original = path.read_bytes()
    with path.open("r+b") as handle:
        handle.write(b"not a database " * (len(original) // 15 + 1))
    return original


def test_no_namespace_yet_means_no_tables(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "data")
    assert engine.table_names() == []
    engine.catalog.create_namespace("sensorlake")
    assert engine.table_names() == []


def test_an_unreadable_catalog_is_an_outage_that_names_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    engine = _engine(data_dir)
    engine.catalog.create_namespace("sensorlake")
    _spoil(data_dir / "catalog.db")
    for call in (engine.table_names, lambda: engine.load("telemetry"),
                 lambda: engine.describe("telemetry"),
                 lambda: engine.execute("SELECT count(*) FROM telemetry")):
        with pytest.raises(LakeError) as caught:
            call()
        assert caught.value.status == 503
        message = str(caught.value)
        assert f"the lake catalog (sql catalog at sqlite:///{data_dir}/catalog.db) could not be " \
               "read: DatabaseError: file is not a database" in message
        assert "catalog.db" in (caught.value.hint or "")


def test_the_catalog_is_named_without_its_password(tmp_path: Path) -> None:
    uri = f"postgresql+psycopg2://lake:hunter2@127.0.0.1:{free_port()}/lake"
    with pytest.raises(LakeError) as caught:
        _engine(tmp_path / "data", catalog={"type": "sql", "uri": uri})
    message = str(caught.value)
    assert "hunter2" not in message
    assert "sql catalog at postgresql+psycopg2://lake:***@127.0.0.1:" in message
    assert "OperationalError" in message
    assert "lake.catalog" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://lake:s3cr%40t@db:5432/lake", "postgresql://lake:***@db:5432/lake"),
        ("https://user:pw@rest.example/catalog", "https://user:***@rest.example/catalog"),
        ("https://rest.example/catalog", "https://rest.example/catalog"),
        ("sqlite:////var/lib/sensorlake/catalog.db", "sqlite:////var/lib/sensorlake/catalog.db"),
    ],
)
def test_uris_are_shown_with_the_password_masked(uri: str, shown: str) -> None:
    assert mask_uri(uri) == shown


@pytest.mark.slow
def test_a_catalog_outage_answers_503_not_table_does_not_exist(fresh: Sensorlake) -> None:
    fresh.start()
    assert fresh.query("SELECT count(*) FROM telemetry")["rows"] == [[0]]
    catalog = fresh.data_dir / "catalog.db"
    original = _spoil(catalog)
    try:
        for method, path, body in (("POST", "/api/v1/query", {"sql": "SELECT * FROM telemetry"}),
                                   ("GET", "/api/v1/tables", None),
                                   ("GET", "/api/v1/tables/telemetry", None)):
            reply = httpx.request(method, f"{fresh.url}{path}", json=body, timeout=30)
            assert reply.status_code == 503, reply.text
            error = reply.json()["error"]
            assert "the lake catalog (sql catalog at sqlite:///" in error, error
            assert "could not be read" in error
            assert "does not exist" not in error
            assert reply.headers["Retry-After"] == "1"
    finally:
        catalog.write_bytes(original)
    assert fresh.query("SELECT count(*) FROM telemetry")["rows"] == [[0]]  # back once it is
