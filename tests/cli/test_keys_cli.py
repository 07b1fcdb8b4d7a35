"""`sensorlake keys` as a user runs it: the key is shown once, then only its id."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.conftest import Sensorlake


def test_create_shows_the_key_once_and_list_never(tmp_path: Path) -> None:
    lake = Sensorlake(tmp_path / "data")  # not started: keys need no running server
    created = lake.cli("keys", "create", "--scope", "ingest", "--device", "gh-01",
                       "--name", "greenhouse gateway")
    key = created.stdout.strip()
    assert created.stdout == key + "\n"  # only the key on stdout: KEY=$(…) captures it
    prefix, key_id, secret = key.split("_")
    assert (prefix, len(key_id), len(secret)) == ("slk", 12, 43)
    assert "cannot be shown again" in created.stderr
    assert key_id in created.stderr
    assert secret not in created.stderr
    as_json = orjson.loads(lake.cli("keys", "create", "--scope", "read", "-f", "json").stdout)
    assert as_json["key"].startswith(f"slk_{as_json['id']}_")
    assert as_json["scope"] == "read"

    listed = lake.cli("keys", "list", "-f", "json").stdout
    assert secret not in listed
    assert as_json["key"].split("_")[2] not in listed
    rows = orjson.loads(listed)["rows"]
    assert [row[:4] for row in rows] == [
        [key_id, "greenhouse gateway", "ingest", "gh-01"],
        [as_json["id"], "", "read", None],
    ]
    assert {row[6] for row in rows} == {"active"}
    table = lake.cli("keys", "list").stdout
    assert key_id in table
    assert secret not in table


def test_revoke_and_the_mistakes_a_user_can_make(tmp_path: Path) -> None:
    lake = Sensorlake(tmp_path / "data")
    key_id = lake.cli("keys", "create", "--scope", "admin").stdout.strip().split("_")[1]
    assert f"revoked API key {key_id}" in lake.cli("keys", "revoke", key_id).stdout
    assert "already revoked" in lake.cli("keys", "revoke", key_id).stdout
    rows = orjson.loads(lake.cli("keys", "list", "-f", "json").stdout)["rows"]
    assert rows[0][0] == key_id
    assert rows[0][6] == "revoked"

    unknown = lake.cli("keys", "revoke", "nosuchkey", check=False)
    assert unknown.returncode == 1
    assert "sensorlake keys list" in unknown.stderr
    bound_reader = lake.cli("keys", "create", "--scope", "read", "--device", "gh-01", check=False)
    assert bound_reader.returncode == 1
    assert "--scope ingest" in bound_reader.stderr
    bad_device = lake.cli("keys", "create", "--scope", "ingest", "--device", "a/b", check=False)
    assert bad_device.returncode == 1
    assert "topic level" in bad_device.stderr
    no_scope = lake.cli("keys", "create", check=False)
    assert no_scope.returncode == 2
    assert "--scope" in no_scope.stderr
    assert "Traceback" not in bound_reader.stderr + bad_device.stderr + unknown.stderr
