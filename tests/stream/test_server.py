"""The embedded nats-server's configuration, checked by nats-server itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sensorlake.config import load_config
from sensorlake.stream.server import find_nats_server, render_nats_config


def _check(conf: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "nats.conf"
    path.write_text(conf, encoding="utf-8")
    return subprocess.run([str(find_nats_server()), "-t", "-c", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_stream_ingest_queue_is_sized_from_the_config(tmp_path: Path) -> None:
    """nats-server's default ingest queue (10,000 messages) drops device publishes that were
    already acknowledged when a burst outruns the disk; the rendered bound replaces it."""
    config = load_config(overrides={"data_dir": str(tmp_path / "data")}, environ={
        "SENSORLAKE_STREAM__INGEST_BUFFER": str(64 * 1024 * 1024)})
    conf = render_nats_config(config)
    assert "max_buffered_size: 67108864" in conf
    assert "max_buffered_msgs: 1000000000" in conf
    checked = _check(conf, tmp_path)
    assert checked.returncode == 0, checked.stderr
    broken = _check(conf.replace("max_buffered_size: 67108864", "max_buffered_size: {"), tmp_path)
    assert broken.returncode != 0  # nats-server -t does reject a bad configuration
