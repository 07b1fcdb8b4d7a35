"""The same pipeline with its Iceberg catalog in a real PostgreSQL (how it is shared at scale)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import Sensorlake, free_port

pytestmark = pytest.mark.slow


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture
def postgres() -> Iterator[str]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is missing; .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="sl-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "lake"],
                   check=True, capture_output=True)
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"),
         "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
        check=True, capture_output=True,
    )
    yield f"postgresql+psycopg2://lake@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"],
                   check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_pipeline_with_a_postgresql_catalog(fresh: Sensorlake, postgres: str) -> None:
    fresh.extra_env.update(SENSORLAKE_LAKE__CATALOG__TYPE="sql",
                           SENSORLAKE_LAKE__CATALOG__URI=postgres)
    fresh.start()
    assert not (fresh.data_dir / "catalog.db").exists()
    fresh.ingest("farm/gh-01/telemetry", [{"n": n} for n in range(10)])
    fresh.mqtt_publish("farm/gh-02/telemetry", [orjson.dumps({"n": 10})])
    assert fresh.stop() == 0  # commits what it holds into the PostgreSQL catalog
    out = fresh.cli("query", "SELECT count(*), sum(n) FROM telemetry", "-f", "json").stdout
    assert orjson.loads(out)["rows"] == [[11, 55.0]]
    tables = orjson.loads(fresh.cli("tables", "-f", "json").stdout)["rows"]
    assert [t[0] for t in tables] == ["dead_letter", "telemetry", "telemetry_1h", "telemetry_1m",
                                      "device_state"]
    # device state lives in the same PostgreSQL database, not in a file of this node
    out = fresh.cli("query", "SELECT device_id, messages FROM device_state ORDER BY 1",
                    "-f", "json").stdout
    assert orjson.loads(out)["rows"] == [["gh-01", 1], ["gh-02", 1]]
    assert not (fresh.data_dir / "device_state.db").exists()
