"""`sensorlake query` while `up` runs: asked over HTTP with the run file's token, which reads and
does nothing else; any doubt about the server and the command answers by itself."""

from __future__ import annotations

import json
import stat

import httpx

from tests.conftest import Sensorlake


def _run_file(lake: Sensorlake) -> dict[str, object]:
    doc: dict[str, object] = json.loads((lake.data_dir / "run.json").read_text())
    return doc


def test_the_cli_asks_the_running_up_and_sees_what_it_sees(fresh: Sensorlake, device: str
                                                           ) -> None:
    fresh.start()
    fresh.ingest(f"farm/{device}/t", [{"temperature": 1.5}])
    result = fresh.cli("query", f"SELECT temperature FROM telemetry WHERE device_id = '{device}'",
                       "-f", "csv")
    assert result.stdout.splitlines() == ["temperature", "1.5"]
    shown = fresh.cli("query", "SELECT 1 AS one")
    assert "answered by the running sensorlake" in shown.stderr
    # An error the server finds reads as it would locally, with its hint.
    missing = fresh.cli("query", "SELECT * FROM nosuch", check=False)
    assert missing.returncode == 1
    assert "nosuch" in missing.stderr
    assert "sensorlake tables" in missing.stderr


def test_the_run_file_token_is_private_and_only_reads(fresh: Sensorlake, device: str) -> None:
    fresh.start()
    path = fresh.data_dir / "run.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = _run_file(fresh)["token"]
    headers = {"Authorization": f"Bearer {token}"}
    # The first API key closes the API; the token still reads, as the CLI needs.
    fresh.cli("keys", "create", "--scope", "admin")
    assert httpx.post(f"{fresh.url}/api/v1/query", json={"sql": "SELECT 1"},
                      timeout=10).status_code == 401
    reply = httpx.post(f"{fresh.url}/api/v1/query", json={"sql": "SELECT 1"}, headers=headers,
                       timeout=10)
    assert reply.status_code == 200, reply.text
    ingest = httpx.post(f"{fresh.url}/api/v1/ingest", params={"topic": f"farm/{device}/t"},
                        json={"temperature": 1}, headers=headers, timeout=10)
    assert ingest.status_code == 403
    assert "scope" in ingest.json()["error"]
    assert httpx.get(f"{fresh.url}/api/v1/simulate/x", headers=headers,
                     timeout=10).status_code == 404  # read scope: may learn it is not there
    assert httpx.delete(f"{fresh.url}/api/v1/simulate/x", headers=headers,
                        timeout=10).status_code == 403
    assert "answered by the running sensorlake" in fresh.cli("query", "SELECT 1").stderr


def test_a_run_file_the_server_does_not_honour_leaves_the_cli_to_answer_itself(
        fresh: Sensorlake, device: str) -> None:
    fresh.start()
    fresh.ingest(f"farm/{device}/t", [{"temperature": 2.5}])
    fresh.wait_rows(f"SELECT 1 FROM telemetry WHERE device_id = '{device}'", 1)
    path = fresh.data_dir / "run.json"
    doc = _run_file(fresh)
    sql = f"SELECT temperature FROM telemetry WHERE device_id = '{device}'"
    fresh.cli("keys", "create", "--scope", "read")  # a wrong token is then refused
    for changed in ({"token": "not-the-token"}, {"local_http": "http://127.0.0.1:1"}):
        path.write_text(json.dumps({**doc, **changed}))
        result = fresh.cli("query", sql, "-f", "csv")
        assert result.stdout.splitlines() == ["temperature", "2.5"], changed
        assert "answered by" not in fresh.cli("query", sql).stderr
    path.write_text(json.dumps(doc))
    assert "answered by the running sensorlake" in fresh.cli("query", sql).stderr
