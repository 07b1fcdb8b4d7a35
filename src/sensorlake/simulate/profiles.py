"""Device profiles for `sensorlake simulate`: what each kind of simulated device sends.

A reading is a pure function of (seed, profile, device index, tick, time): it draws from a
`random.Random` seeded with a string of those, never from global state or the clock. So a run can be
replayed exactly, senders can work in any order or in parallel, and tests need no fixtures.

The shapes copy what people actually send to managed IoT services — a greenhouse with the famous
400 °C broken sensor, a Raspberry Pi fleet with an hour-only `timestamp_sent`, NOAA-style nested
weather observations — so the demo exercises schema inference, nesting and anomaly queries.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sensorlake.errors import SimulateError

__all__ = ["MAX_DEVICES", "PROFILES", "Fleet"]

PROFILES: tuple[str, ...] = ("smartfarm", "edge-host", "weather")
MAX_DEVICES = 100_000

DROPOUT_RATE = 0.005
"""Share of smartfarm ticks with no reading: field sensors miss some, and gaps must be handled."""

QUALITY_OK = "1"  # NOAA ISD: passed all quality control checks
QUALITY_BAD = "9"  # NOAA ISD: missing; the value is a sentinel, not a measurement
UNLIMITED_CEILING_M = 22_000  # NOAA ISD's value for "no ceiling"
CLEAR_VISIBILITY_M = 16_000
SKY_COVER = ("CLR", "FEW", "SCT", "BKN", "OVC")
BROKEN = SKY_COVER.index("BKN")
DESCRIPTIONS = {"RA": "rain", "DZ": "drizzle", "SN": "snow", "FG": "fog"}
VISIBILITY_IN = {
    "RA": (3_000, 10_000),
    "DZ": (5_000, 12_000),
    "SN": (500, 4_000),
    "FG": (100, 1_000),
}
MISSING: tuple[tuple[str, float], ...] = (
    ("air_temperature", 999.9),
    ("dew_point", 999.9),
    ("wind_speed", 999.9),
    ("sea_level_pressure", 9999.9),
)
"""The field a broken instrument spoils and the sentinel NOAA ISD writes for it."""


def _rng(*parts: object) -> random.Random:
    """A generator that depends only on `parts`; string seeds hash the same in every process."""
    return random.Random(":".join(map(str, parts)))  # noqa: S311 — simulated data, not secrets


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _hours(at: datetime) -> float:
    at = at.astimezone(UTC)
    return at.hour + at.minute / 60 + at.second / 3600


def _diurnal(hours: float, peak: float) -> float:
    """1 at the `peak` hour and -1 twelve hours later: the shape of a day's warming."""
    return math.cos(2 * math.pi * (hours - peak) / 24)


def _wave(tick: int, period: float, phase: float) -> float:
    """A slow swing in [-1, 1], bounded however long a run lasts (unlike a random walk)."""
    return math.sin(2 * math.pi * tick / period + phase)


def _clamp(value: float, low: float, high: float) -> float:
    """Always a float, so a value pinned to an int bound keeps the column's type."""
    return float(min(max(value, low), high))


class _Device(Protocol):
    """The traits one simulated device keeps for its whole life, and how it reads at a tick."""

    def reading(
        self, name: str, rng: random.Random, tick: int, at: datetime, anomaly_rate: float
    ) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class _Greenhouse:
    """Greenhouse climate: warm afternoons, cool nights, CO₂ building up while plants do not
    photosynthesise, and a sensor that drifts a little over weeks."""

    offset: float
    drift_amplitude: float
    drift_period: float
    drift_phase: float

    @classmethod
    def draw(cls, rng: random.Random, index: int) -> _Greenhouse:
        return cls(
            offset=rng.uniform(-0.5, 0.5),
            drift_amplitude=rng.uniform(0.5, 2.0),
            drift_period=rng.uniform(2_000, 20_000),
            drift_phase=rng.uniform(0, 2 * math.pi),
        )

    def reading(
        self, name: str, rng: random.Random, tick: int, at: datetime, anomaly_rate: float
    ) -> dict[str, Any] | None:
        # Draw everything up front so the anomaly rate never shifts the values of normal readings.
        dropout, anomaly, spike = rng.random(), rng.random(), rng.random() < 0.5
        day = _diurnal(_hours(at), peak=15)
        drift = self.drift_amplitude * _wave(tick, self.drift_period, self.drift_phase)
        climate = 22 + 6 * day + self.offset
        temperature = climate + drift + rng.gauss(0, 0.3)
        humidity = _clamp(62 - 3.3 * (climate - 22) + rng.gauss(0, 2), 30, 95)
        co2 = _clamp(750 - 300 * day + rng.gauss(0, 25), 380, 1500)
        if dropout < DROPOUT_RATE:
            return None
        error_code = 0
        if anomaly < anomaly_rate:
            if spike:
                temperature = 400.0
            else:
                error_code = 1
        return {
            "device_id": name,
            "ts": _iso(at),
            "temperature": round(temperature, 2),
            "humidity": round(humidity, 2),
            "co2": round(co2, 2),
            "error_code": error_code,
        }


@dataclass(frozen=True)
class _Host:
    """A Raspberry Pi: CPU load with a working-hours bump, a SoC that heats with load, and a disk
    that only fills up."""

    cpu_base: float
    ram_base: float
    disk_start: float
    disk_rate: float

    @classmethod
    def draw(cls, rng: random.Random, index: int) -> _Host:
        return cls(
            cpu_base=rng.uniform(10, 40),
            ram_base=rng.uniform(20, 70),
            disk_start=rng.uniform(15, 60),
            disk_rate=rng.uniform(0.0005, 0.005),
        )

    def reading(
        self, name: str, rng: random.Random, tick: int, at: datetime, anomaly_rate: float
    ) -> dict[str, Any] | None:
        anomaly, overheat = rng.random(), rng.uniform(86, 92)
        load = self.cpu_base * (1 + 0.4 * _diurnal(_hours(at), peak=14))
        cpu = _clamp(rng.gauss(load, 0.2 * load + 1), 0, 100)
        ram = _clamp(rng.gauss(self.ram_base + 0.15 * (cpu - self.cpu_base), 3), 0, 100)
        temperature = _clamp(42 + 0.35 * cpu + rng.gauss(0, 1.5), 35, 85)
        if anomaly < anomaly_rate:  # a runaway process: pegged CPU and thermal throttling
            cpu, temperature = 100.0, overheat
        return {
            "device_id": name,
            "temperature": round(temperature, 2),
            "cpu": round(cpu, 2),
            "ram": round(ram, 2),
            "hd": round(min(self.disk_start + self.disk_rate * tick, 99.0), 2),
            "timestamp": _iso(at),
            "timestamp_sent": at.astimezone(UTC).strftime("%Y-%m-%d %H"),
        }


@dataclass(frozen=True)
class _Station:
    """A weather station: climate set by latitude and height, the day following the sun at its
    longitude, and pressure systems passing by that bring cloud, wind and rain."""

    station: str
    latitude: float
    longitude: float
    elevation: float
    mean_temperature: float
    pressure_period: float
    pressure_phase: float

    @classmethod
    def draw(cls, rng: random.Random, index: int) -> _Station:
        latitude = rng.uniform(-55, 70)
        elevation = min(rng.expovariate(1 / 350), 3_500)
        return cls(
            station=f"{700_000 + index:06d}-99999",  # USAF-WBAN; 99999 = no WBAN number
            latitude=round(latitude, 3),
            longitude=round(rng.uniform(-180, 180), 3),
            elevation=round(elevation, 1),
            mean_temperature=28 - 0.45 * max(abs(latitude) - 15, 0) - 6.5 * elevation / 1000,
            pressure_period=rng.uniform(500, 5_000),
            pressure_phase=rng.uniform(0, 2 * math.pi),
        )

    def reading(
        self, name: str, rng: random.Random, tick: int, at: datetime, anomaly_rate: float
    ) -> dict[str, Any] | None:
        anomaly, broken = rng.random(), rng.randrange(4)
        day = _diurnal((_hours(at) + self.longitude / 15) % 24, peak=15)
        air = self.mean_temperature + 5 * day + rng.gauss(0, 1.5)
        dew = air - abs(rng.gauss(4 + 2 * day, 2.5))  # never above the air temperature
        pressure = _wave(tick, self.pressure_period, self.pressure_phase) * 12 + 1013
        pressure = _clamp(pressure + rng.gauss(0, 1.5), 950, 1050)
        storm = _clamp((1013 - pressure) / 12, -1, 1)  # 1 in a deep low, -1 in a high
        wind = min(rng.weibullvariate(4 + 3 * max(storm, 0), 2), 35)
        cloud = _clamp(0.5 + 0.4 * storm + rng.gauss(0, 0.2), 0, 1)
        sky = self._sky(rng, int(cloud * (len(SKY_COVER) - 0.01)))
        weather = self._weather(rng, sky, air, air - dew, storm)
        visibility = float(CLEAR_VISIBILITY_M)
        for condition in weather:
            low, high = VISIBILITY_IN[condition["code"]]
            visibility = min(visibility, rng.uniform(low, high))
        ceiling = next(
            (layer["base_height"] for layer in sky if SKY_COVER.index(layer["coverage"]) >= BROKEN),
            UNLIMITED_CEILING_M,
        )
        observation: dict[str, Any] = {
            "weather_station": self.station,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "elevation": self.elevation,
            "time": _iso(at),
            "air_temperature": _measured(air),
            "dew_point": _measured(dew),
            "wind_speed": _measured(wind),
            "sea_level_pressure": _measured(pressure),
            "sky_ceiling": _measured(ceiling),
            "visibility_distance": _measured(round(visibility, -1)),
            "sky_cover_condition": sky,
            "weather_condition": weather,
        }
        if anomaly < anomaly_rate:  # a failed instrument reports ISD's "missing" sentinel
            field, sentinel = MISSING[broken]
            observation[field] = {"value": sentinel, "quality": QUALITY_BAD}
        return observation

    @staticmethod
    def _sky(rng: random.Random, top: int) -> list[dict[str, Any]]:
        """1–3 layers, rising and thickening as in a METAR (FEW010 SCT025 BKN080)."""
        if top == 0:
            return [{"coverage": "CLR", "base_height": UNLIMITED_CEILING_M}]
        below = rng.sample(range(1, top), min(rng.randrange(3), top - 1))
        height = rng.uniform(300, 2_000)
        layers = []
        for cover in [*sorted(below), top]:
            layers.append({"coverage": SKY_COVER[cover], "base_height": round(height / 30) * 30})
            height += rng.uniform(500, 3_000)
        return layers

    @staticmethod
    def _weather(
        rng: random.Random, sky: list[dict[str, Any]], air: float, spread: float, storm: float
    ) -> list[dict[str, str]]:
        """Precipitation only from broken or overcast cloud; fog only in nearly saturated air."""
        wet, foggy = rng.random(), rng.random()
        weather = []
        if SKY_COVER.index(sky[-1]["coverage"]) >= BROKEN and wet < 0.3 + 0.3 * storm:
            code = "SN" if air < 0 else "DZ" if storm < 0 else "RA"
            weather.append({"code": code, "description": DESCRIPTIONS[code]})
        if spread < 1 and foggy < 0.5:
            weather.append({"code": "FG", "description": DESCRIPTIONS["FG"]})
        return weather


def _measured(value: float) -> dict[str, Any]:
    return {"value": round(float(value), 1), "quality": QUALITY_OK}


@dataclass(frozen=True)
class _Profile:
    prefix: str
    min_width: int
    root: str
    leaf: str
    device: Callable[[random.Random, int], _Device]


_PROFILES = {
    "smartfarm": _Profile("gh-", 2, "farm", "telemetry", _Greenhouse.draw),
    "edge-host": _Profile("host-", 3, "edge", "metrics", _Host.draw),
    "weather": _Profile("ws-", 3, "weather", "observation", _Station.draw),
}


class Fleet:
    """`devices` simulated devices of one profile; the same seed always gives the same fleet."""

    def __init__(
        self, profile: str, devices: int, *, seed: int = 0, anomaly_rate: float = 0.01
    ) -> None:
        if profile not in _PROFILES:
            raise SimulateError(
                f"unknown profile {profile!r}", hint=f"choose one of: {', '.join(PROFILES)}"
            )
        if not 1 <= devices <= MAX_DEVICES:
            raise SimulateError(
                f"devices must be between 1 and {MAX_DEVICES:,}, not {devices}",
                hint="run several simulators for a bigger fleet",
            )
        if not 0 <= anomaly_rate <= 1:  # also refuses NaN
            raise SimulateError(
                f"anomaly_rate must be between 0 and 1, not {anomaly_rate}",
                hint="it is a share of readings, e.g. 0.01 for one in a hundred",
            )
        self.profile = profile
        self.seed = seed
        self.anomaly_rate = anomaly_rate
        self._shape = _PROFILES[profile]
        width = max(self._shape.min_width, len(str(devices)))
        self.names = [f"{self._shape.prefix}{n:0{width}d}" for n in range(1, devices + 1)]
        # Traits are drawn on first use: a 100,000-device fleet should start at once.
        self._devices: dict[int, _Device] = {}

    def topic(self, index: int) -> str:
        """The device name is topic level 1, which ingest's default `device_id_from` reads."""
        return f"{self._shape.root}/{self._name(index)}/{self._shape.leaf}"

    def reading(self, index: int, tick: int, at: datetime) -> dict[str, Any] | None:
        """What device `index` sends at its `tick`-th interval, taken at `at`; None = dropout."""
        name = self._name(index)
        if tick < 0:
            raise SimulateError(f"tick must be 0 or more, not {tick}")
        if at.utcoffset() is None:
            raise SimulateError(
                f"reading time {at.isoformat()} has no timezone",
                hint="pass datetime.now(UTC); a naive time would be read as local time",
            )
        device = self._devices.get(index)
        if device is None:
            device = self._shape.device(_rng(self.seed, self.profile, index), index)
            self._devices[index] = device
        rng = _rng(self.seed, self.profile, index, tick)
        return device.reading(name, rng, tick, at, self.anomaly_rate)

    def _name(self, index: int) -> str:
        if not 0 <= index < len(self.names):
            raise SimulateError(f"device index {index} is outside 0..{len(self.names) - 1}")
        return self.names[index]
