"""What a listen address exposes: loopback only, every interface, or one network."""

from __future__ import annotations

import ipaddress

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so treat it as exposed


def is_wildcard(host: str) -> bool:
    return host in {"0.0.0.0", "::", "[::]", ""}  # noqa: S104 - recognising it, not binding
