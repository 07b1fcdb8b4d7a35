"""Which device sent a reading and when it was measured.

These are the conventions of the managed builds we replace: the payload may name the device
(`device_id`, `deviceId`, `device`, `thing`) and the event time (`ts`, `timestamp`, `time`, in ISO
8601 or epoch seconds/ms/µs/ns); otherwise the topic level and the arrival time stand in.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

DEVICE_KEYS = ("device_id", "deviceId", "device", "thing")
TIME_KEYS = ("ts", "timestamp", "time")
_DEVICE_KEY_SET = frozenset(DEVICE_KEYS)
_TIME_KEY_SET = frozenset(TIME_KEYS)

MIN_US = 0  # 1970-01-01
MAX_US = 7_258_118_400_000_000  # 2200-01-01
EPOCH_SCALES: tuple[tuple[float, int], ...] = ((1e11, 1_000_000), (1e14, 1_000), (1e17, 1))
"""(magnitude below which, multiplier to µs) for seconds, milliseconds and microseconds; above
the last limit an epoch is in nanoseconds (divided by NS_PER_US)."""
NS_PER_US = 1_000


class TimeValueError(ValueError):
    """`ts` is present but cannot be read as a time; the reading is dead-lettered, not guessed."""


def epoch_to_us(value: float) -> int:
    """Epoch in s, ms, µs or ns — told apart by magnitude, as any date after 1973 is unambiguous."""
    if not math.isfinite(value):
        raise TimeValueError(f"epoch {value!r} is not a finite number")
    magnitude = abs(value)
    for limit, factor in EPOCH_SCALES:
        if magnitude < limit:
            us = value * factor
            break
    else:
        us = value / NS_PER_US
    result = int(us)
    if not MIN_US <= result <= MAX_US:
        raise TimeValueError(f"epoch {value!r} is outside 1970–2200")
    return result


def parse_time_us(value: Any) -> int:
    """Microseconds since the epoch (UTC) from an epoch number or an ISO 8601 string."""
    if isinstance(value, bool):
        raise TimeValueError(f"{value!r} is not a time")
    if isinstance(value, int | float):
        return epoch_to_us(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return epoch_to_us(float(text))
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise TimeValueError(f"{value!r} is neither ISO 8601 nor an epoch number") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
        result = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if not MIN_US <= result <= MAX_US:
            raise TimeValueError(f"{value!r} is outside 1970–2200")
        return result
    raise TimeValueError(f"{type(value).__name__} {value!r} is not a time")


class IdentityRules:
    """`device_id_from = "topic:N"` picks topic level N when the payload names no device."""

    def __init__(self, device_id_from: str = "topic:1") -> None:
        self.topic_level: int | None = (
            int(device_id_from.split(":", 1)[1]) if device_id_from.startswith("topic:") else None
        )

    @staticmethod
    def named_device(payload: dict[str, Any]) -> str | None:
        """The device the payload itself names, if any."""
        if _DEVICE_KEY_SET.isdisjoint(payload):  # most readings: one C-level check
            return None
        for key in DEVICE_KEYS:
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
        return None

    def device_id(self, payload: dict[str, Any], topic: str) -> str | None:
        named = self.named_device(payload)
        if named is not None:
            return named
        if self.topic_level is None:
            return None
        levels = topic.split("/")
        return levels[self.topic_level] if self.topic_level < len(levels) else None

    @staticmethod
    def event_time_us(payload: dict[str, Any], arrival_us: int) -> int:
        """`ts` must be readable; the looser aliases fall back to arrival time when they are not."""
        if _TIME_KEY_SET.isdisjoint(payload):
            return arrival_us
        value = payload.get("ts")
        if value is not None:
            return parse_time_us(value)
        for key in TIME_KEYS[1:]:
            value = payload.get(key)
            if value is not None:
                try:
                    return parse_time_us(value)
                except TimeValueError:
                    continue
        return arrival_us
