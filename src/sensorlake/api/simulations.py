"""Simulations that `up` runs itself: `POST /api/v1/simulate` and `up --demo`.

They write straight into the stream, the way HTTP ingest does (acknowledged, many readings per
stream message), so a simulation needs no MQTT credentials and survives any auth setup.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from sensorlake.config import Config
from sensorlake.errors import SimulateError, SimulationNotFound
from sensorlake.ingest.body import pack_messages
from sensorlake.simulate.profiles import PROFILES
from sensorlake.simulate.run import Plan, Progress, run
from sensorlake.stream.connection import StreamClient
from sensorlake.stream.subjects import subject_for_topic

log = logging.getLogger(__name__)

MAX_RUNNING = 8


class StreamSink:
    def __init__(self, client: StreamClient, config: Config) -> None:
        self._client = client
        self._config = config

    async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> int:
        by_topic: dict[str, list[bytes]] = {}
        for topic, payload in batch:
            by_topic.setdefault(topic, []).append(orjson.dumps(payload))
        for topic, readings in by_topic.items():
            subject = subject_for_topic(self._config.stream.subject_prefix, topic)
            await self._client.publish_many(
                subject, pack_messages(readings, self._config.stream.max_payload))
        return len(batch)

    async def close(self) -> None:
        return None


@dataclass
class Simulation:
    id: str
    plan: Plan
    progress: Progress = field(default_factory=Progress)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Progress] | None = None

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        return {"id": self.id, "profile": plan.profile, "devices": plan.devices,
                "interval": plan.round_seconds, "count": plan.count, "duration": plan.duration,
                "seed": plan.seed, "anomaly_rate": plan.anomaly_rate,
                "stopped": self.stop.is_set(), **self.progress.to_json()}


def plan_from_json(body: Any) -> Plan:
    """A Plan from a request body; every field is checked, unknown ones are refused."""
    if not isinstance(body, dict):
        raise SimulateError("the body must be a JSON object",
                            hint='e.g. {"count": 12, "interval": 10, "profile": "smartfarm"}')
    known = {"profile", "devices", "interval", "rate", "count", "duration", "seed",
             "anomaly_rate"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise SimulateError(f"unknown field(s): {', '.join(unknown)}",
                            hint=f"known fields: {', '.join(sorted(known))}")
    numbers = {"devices": int, "count": int, "seed": int, "interval": float, "rate": float,
               "duration": float, "anomaly_rate": float}
    for name, kind in numbers.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                kind is int and not isinstance(value, int)):
            raise SimulateError(f"{name} must be {'an integer' if kind is int else 'a number'},"
                                f" not {value!r}")
    profile = body.get("profile", "smartfarm")
    if profile not in PROFILES:
        raise SimulateError(f"unknown profile {profile!r}", hint=f"one of {', '.join(PROFILES)}")
    if body.get("count") is None and body.get("duration") is None:
        raise SimulateError("give count or duration, so the simulation ends",
                            hint='e.g. {"count": 12, "interval": 10}')
    return Plan(profile=profile, devices=body.get("devices", 5),
                interval=body.get("interval"), rate=body.get("rate"), count=body.get("count"),
                duration=body.get("duration"), seed=body.get("seed", 0),
                anomaly_rate=body.get("anomaly_rate", 0.01))


class Simulations:
    def __init__(self, client: StreamClient, config: Config) -> None:
        self._client = client
        self._config = config
        self._runs: dict[str, Simulation] = {}

    def start(self, plan: Plan) -> Simulation:
        running = sum(1 for s in self._runs.values() if s.progress.finished is None)
        if running >= MAX_RUNNING:
            raise SimulateError(f"{running} simulations are running already",
                                hint="stop one with DELETE /api/v1/simulate/{id}")
        sim = Simulation(uuid.uuid4().hex[:12], plan)
        sim.task = asyncio.get_running_loop().create_task(
            self._run(sim), name=f"simulation {sim.id}")
        self._runs[sim.id] = sim
        return sim

    async def _run(self, sim: Simulation) -> Progress:
        try:
            return await run(sim.plan, StreamSink(self._client, self._config), sim.progress,
                             sim.stop)
        except Exception as exc:  # reported through GET, never kills `up`
            sim.progress.note_error(str(exc))
            log.warning("simulation %s ended: %s", sim.id, exc)
            return sim.progress

    def get(self, sim_id: str) -> Simulation:
        sim = self._runs.get(sim_id)
        if sim is None:
            raise SimulationNotFound(f"no simulation {sim_id!r}",
                                hint="POST /api/v1/simulate starts one and returns its id")
        return sim

    async def stop(self, sim_id: str) -> Simulation:
        sim = self.get(sim_id)
        sim.stop.set()
        if sim.task is not None:
            await sim.task
        return sim

    async def stop_all(self) -> None:
        for sim in self._runs.values():
            sim.stop.set()
        await asyncio.gather(*(s.task for s in self._runs.values() if s.task is not None))
