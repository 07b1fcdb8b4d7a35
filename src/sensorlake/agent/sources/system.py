"""The host itself as a sensor: CPU, memory, disk and temperatures, through psutil."""

from __future__ import annotations

import time
from typing import Any

import psutil  # type: ignore[import-untyped]  # psutil ships no type information

# Sensors that report the CPU/SoC temperature, most specific first: a Raspberry Pi, Intel,
# AMD, then generic ACPI.
_CPU_SENSORS = ("cpu_thermal", "cpu-thermal", "coretemp", "k10temp", "zenpower", "acpitz")


class SystemSource:
    """Readings that need no extra hardware, so any Linux box can feed the lake."""

    name = "system"

    def __init__(self, disk_path: str = "/") -> None:
        self._disk_path = disk_path
        # psutil measures CPU use between two calls; the first one only sets the baseline.
        psutil.cpu_percent(interval=None)

    def read(self) -> list[dict[str, Any]]:
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(self._disk_path)
        reading: dict[str, Any] = {
            "cpu_percent": float(psutil.cpu_percent(interval=None)),
            "ram_percent": float(memory.percent),
            "ram_used_mb": round(memory.used / 2**20, 1),
            "disk_percent": float(disk.percent),
            "disk_free_gb": round(disk.free / 2**30, 2),
            "load_1m": round(float(psutil.getloadavg()[0]), 2),
            "uptime_s": round(_uptime()),
        }
        temperature = _cpu_temperature()
        if temperature is not None:
            reading["cpu_temp_c"] = temperature
        return [reading]


def _uptime() -> float:
    return time.time() - float(psutil.boot_time())


def _cpu_temperature() -> float | None:
    """The CPU temperature where the platform exposes one (not in most VMs and containers)."""
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    try:
        sensors: dict[str, list[Any]] = read()
    except OSError:
        return None
    for name in (*_CPU_SENSORS, *sorted(sensors)):
        for entry in sensors.get(name, []):
            if entry.current is not None and entry.current > -273:
                return round(float(entry.current), 1)
    return None
