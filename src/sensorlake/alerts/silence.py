"""Silencing a device's alerts for a while (`sensorlake alerts silence gh-01 --for 2h`): its
alerts are still tracked and listed, and no notification goes out for them until it ends."""

from __future__ import annotations

import re
import time

from sensorlake.alerts.store import AlertStore
from sensorlake.errors import AlertsError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_SILENCE_S = 365 * 86_400


def parse_duration(text: str) -> float:
    """Seconds of `90s`, `30m`, `2h`, `1d`, `1w` or a plain number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise AlertsError(f"{text!r} is not a duration",
                           hint="write it as 90s, 30m, 2h, 1d or 1w")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 0 < seconds <= MAX_SILENCE_S:
        raise AlertsError(f"{text!r} is outside 1 second to 1 year",
                           hint="silence for a while; 0 lifts a silence (`alerts unsilence`)")
    return seconds


def silence(store: AlertStore, device: str, seconds: float, comment: str = "") -> float:
    """Silence `device` for `seconds`; returns when it ends (epoch seconds)."""
    if not device or len(device) > 256:
        raise AlertsError("name the device to silence (1 to 256 characters)",
                           hint="`sensorlake alerts list` shows the devices with alerts")
    until = time.time() + seconds
    store.silence(device, until, comment)
    return until
