"""Who may write as which device.

Once devices are registered, MQTT takes only authenticated connections (a client certificate, or
a token the gate relays with a certificate of the device's own), and nats-server lets each device
publish only to its own topics (`devices.topics`, with `{device}` its name). So the topic of an
MQTT reading names the device that sent it, and a reading whose payload names another device is
refused — dead-lettered with the reason — unless its sender is a gateway, which relays readings
of other devices (`sensorlake devices gateway NAME`). HTTP ingest applies the same rule to API
keys bound to a device (see `api/auth.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sensorlake.config import Config
from sensorlake.devices.registry import Registry


def _pattern(topic_filter: str) -> re.Pattern[str]:
    """`+/{device}/#` as a regex whose one group is the device's name."""
    levels = topic_filter.split("/")
    tail = ""
    if levels[-1] == "#":
        levels, tail = levels[:-1], "(?:/.*)?"
    parts = []
    for level in levels:
        if level == "+":
            parts.append("[^/]+")
        else:
            parts.append("(?P<device>[^/]+)".join(re.escape(p) for p in level.split("{device}"))
                         if "{device}" in level else re.escape(level))
    return re.compile("/".join(parts) + tail)


@dataclass(frozen=True)
class DevicePolicy:
    patterns: tuple[re.Pattern[str], ...] = ()
    gateways: frozenset[str] = frozenset()
    enforced: bool = False
    """Devices are registered, so every MQTT connection is authenticated as one of them."""

    def publisher(self, topic: str) -> str | None:
        """The device that published on `topic`, when MQTT is authenticated; else None."""
        if not self.enforced:
            return None
        for pattern in self.patterns:
            match = pattern.fullmatch(topic)
            if match is not None:
                return match.group("device")
        return None

    def refusal(self, publisher: str, named: str | None) -> str | None:
        """Why a reading from `publisher` that names device `named` is refused, or None."""
        if named == publisher or publisher in self.gateways:
            return None
        return (f"the reading names device {named!r} but was published by {publisher!r}; only "
                f"a gateway may write for other devices (`sensorlake devices gateway "
                f"{publisher}`)")


def load_policy(config: Config) -> DevicePolicy:
    devices = Registry(config.data_dir).devices()
    return DevicePolicy(
        patterns=tuple(_pattern(t) for t in config.devices.topics),
        gateways=frozenset(d.name for d in devices if d.gateway and d.active),
        enforced=bool(devices),
    )
