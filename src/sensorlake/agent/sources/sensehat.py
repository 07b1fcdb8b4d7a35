"""A Raspberry Pi Sense HAT: temperature, humidity and pressure from its on-board sensors."""

from __future__ import annotations

import importlib
from typing import Any

from sensorlake.errors import AgentError


class SenseHatSource:
    """Imported only when asked for, since the library exists on Raspberry Pi OS alone."""

    name = "sensehat"

    def __init__(self) -> None:
        try:
            module = importlib.import_module("sense_hat")
        except ImportError as exc:
            raise AgentError(
                "--source sensehat needs the Sense HAT library (Python module sense_hat), "
                "which is not installed",
                hint="on Raspberry Pi OS: `sudo apt install python3-sense-hat`, or "
                "`pip install sense-hat` in the agent's environment") from exc
        try:
            self._hat = module.SenseHat()
        except (OSError, RuntimeError) as exc:
            raise AgentError(f"no Sense HAT answered: {exc}",
                             hint="check that the HAT is seated and I2C is enabled "
                             "(raspi-config → Interface Options → I2C)") from exc

    def read(self) -> list[dict[str, Any]]:
        return [{
            "temperature": round(float(self._hat.get_temperature()), 2),
            "humidity": round(float(self._hat.get_humidity()), 2),
            "pressure": round(float(self._hat.get_pressure()), 2),
        }]
