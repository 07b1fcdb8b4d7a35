"""The TLS listeners' certificate, issued by the sensorlake CA for every name devices dial."""

from __future__ import annotations

import socket
from pathlib import Path

from sensorlake.config import Config
from sensorlake.devices.ca import CertificateAuthority, certificate_hosts, write_private
from sensorlake.hosts import is_wildcard


def public_host(config: Config) -> str:
    """What a device on the network should dial."""
    if config.server.public_host:
        return config.server.public_host
    if is_wildcard(config.server.host):
        return socket.gethostname()
    return config.server.host


def server_hosts(config: Config) -> list[str]:
    hosts = [public_host(config), "localhost", "127.0.0.1"]
    if not is_wildcard(config.server.host):
        hosts.append(config.server.host)
    else:
        hosts.append(socket.gethostname())
    return list(dict.fromkeys(hosts))


def server_certificate_paths(config: Config) -> tuple[Path, Path]:
    directory = config.data_dir / "tls"
    return directory / "server.crt", directory / "server.key"


def ensure_server_certificate(config: Config) -> tuple[Path, Path]:
    """(certificate, key) for the TLS listeners; reissued when the names devices dial change."""
    cert_path, key_path = server_certificate_paths(config)
    hosts = server_hosts(config)
    if cert_path.exists() and key_path.exists():
        have = certificate_hosts(cert_path.read_bytes())
        if set(hosts) <= set(have):
            return cert_path, key_path
    issued = CertificateAuthority(config.data_dir / "ca").issue_server(hosts)
    write_private(key_path, issued.key_pem)
    cert_path.write_bytes(issued.cert_pem)
    return cert_path, key_path
