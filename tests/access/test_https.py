"""The HTTP API over TLS, with a certificate from the sensorlake CA or the user's own."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from sensorlake.devices.ca import CertificateAuthority, write_private
from tests.conftest import Sensorlake

pytestmark = pytest.mark.slow


def test_https_with_the_sensorlake_ca_and_with_the_users_own_certificate(tmp_path: Path) -> None:
    lake = Sensorlake(tmp_path / "data", SENSORLAKE_SERVER__HTTPS="true").start()
    try:
        ca = lake.data_dir / "ca" / "ca.crt"
        reply = httpx.post(f"{lake.url}/api/v1/ingest", params={"topic": "farm/gh-01/t"},
                           json={"t": 1}, verify=ssl.create_default_context(cafile=str(ca)))
        assert reply.status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{lake.url}/healthz")  # not signed by a public CA
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://127.0.0.1:{lake.http_port}/healthz")  # plain HTTP is not served
    finally:
        lake.stop()

    own = CertificateAuthority(tmp_path / "own-ca")
    issued = own.issue_server(["localhost", "127.0.0.1"])
    (tmp_path / "site.crt").write_bytes(issued.cert_pem)
    write_private(tmp_path / "site.key", issued.key_pem)
    lake = Sensorlake(tmp_path / "data2", SENSORLAKE_SERVER__HTTPS="true",
                      SENSORLAKE_SERVER__TLS_CERT=str(tmp_path / "site.crt"),
                      SENSORLAKE_SERVER__TLS_KEY=str(tmp_path / "site.key")).start()
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "own-ca" / "ca.crt"))
        assert httpx.get(f"{lake.url}/healthz", verify=context).status_code == 200
    finally:
        lake.stop()


def test_a_certificate_without_its_key_is_a_config_error(tmp_path: Path) -> None:
    lake = Sensorlake(tmp_path / "data", SENSORLAKE_SERVER__HTTPS="true",
                      SENSORLAKE_SERVER__TLS_CERT=str(tmp_path / "missing.crt"))
    with pytest.raises(AssertionError, match=r"server\.tls_key.*tls_cert and tls_key go together"):
        lake.start()
