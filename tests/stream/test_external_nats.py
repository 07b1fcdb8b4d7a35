"""`[stream] url` points sensorlake at an existing NATS server instead of starting its own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensorlake.errors import ServerStartError
from sensorlake.stream.server import find_nats_server
from tests.conftest import Sensorlake, free_port


@pytest.fixture
def external_nats(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    conf = tmp_path / "external.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        'accounts { APP { jetstream: enabled, users: [{user: app, password: secret}] } }\n'
    )
    proc = subprocess.Popen([str(find_nats_server()), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield f"nats://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
def test_up_uses_an_existing_server_and_starts_none(fresh: Sensorlake, external_nats: str
                                                    ) -> None:
    fresh.extra_env.update(SENSORLAKE_STREAM__URL=external_nats, SENSORLAKE_STREAM__USER="app",
                           SENSORLAKE_STREAM__PASSWORD="secret")
    fresh.start()
    assert not (fresh.data_dir / "nats.conf").exists()
    assert fresh.ingest("farm/gh-9/telemetry", {"temperature": 3}).status_code == 200
    assert fresh.wait_rows("SELECT temperature FROM telemetry", 1) == [[3.0]]
    assert fresh.stop() == 0
    assert "secret" not in fresh.log()


def test_nats_server_binary_is_found_and_a_wrong_path_is_explained(tmp_path: Path) -> None:
    found = find_nats_server()
    version = subprocess.run([str(found), "--version"], capture_output=True, text=True,
                             check=True, timeout=10)
    assert version.stdout.startswith("nats-server: v2.")
    with pytest.raises(ServerStartError, match=r"stream\.nats_server"):
        find_nats_server(str(tmp_path / "missing"))
