"""The pipeline worker as a process of its own (`sensorlake worker`).

`sensorlake up` runs it as a supervised child so that decoding and Parquet writing get a core of
their own instead of sharing one interpreter with the HTTP API. It answers status requests
(readiness, positions, health and its metrics) over NATS, which is how the API's /healthz and
/metrics see it, and how `up` tells a worker that makes no progress from a busy one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import orjson
from nats.aio.msg import Msg
from pyiceberg.catalog import Catalog

from sensorlake.config import Config
from sensorlake.devices.policy import load_policy
from sensorlake.faults import Faults
from sensorlake.ingest.identity import IdentityRules
from sensorlake.lake.catalog import open_catalog
from sensorlake.lake.fields import FieldLimits
from sensorlake.lake.outputs import dead_letter_output, telemetry_output
from sensorlake.lake.records import Decoder
from sensorlake.lake.tables import read_position
from sensorlake.metrics import WriterMetrics
from sensorlake.pipeline.checkpoint import CheckpointStore
from sensorlake.pipeline.output import Output
from sensorlake.pipeline.upkeep import keep_lake
from sensorlake.pipeline.worker import Worker
from sensorlake.stream.connection import StreamClient
from sensorlake.stream.partitions import Position
from sensorlake.stream.subjects import WRITER_STATUS_SUBJECT

if TYPE_CHECKING:
    from sensorlake.rules.evaluate import CompiledRule

Delivery = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

log = logging.getLogger(__name__)

POLICY_REFRESH_S = 2.0
"""How soon a device registered, revoked or made a gateway counts for identity checks."""
STOP_GRACE_S = 15.0
"""Asked to stop, the worker commits what it holds and exits; past this it exits regardless
(with NATS or the catalog gone it could wait forever). Nothing is lost: what is not committed
is still in the stream, and the next worker resumes from the lake's position."""


async def writer_status(client: StreamClient, wait_s: float = 1.0) -> dict[str, Any] | None:
    """What the worker reports about itself (readiness, committed positions, health, metrics),
    or None when no worker answers in time."""
    reply = await client.request(WRITER_STATUS_SUBJECT, wait_s=wait_s)
    if reply is None:
        return None
    status: dict[str, Any] = orjson.loads(reply)
    return status


def build_worker(config: Config, client: StreamClient, metrics: WriterMetrics,
                 fault_points: Faults) -> Worker:
    catalog = open_catalog(config)
    namespace = config.lake.namespace
    telemetry = telemetry_output(catalog, namespace, fault_points)
    dead = dead_letter_output(catalog, namespace, fault_points)
    identity = IdentityRules(config.ingest.device_id_from)
    limits = FieldLimits.from_config(config)

    def decoder() -> Decoder:
        return Decoder(identity, telemetry.table.schema().as_arrow(), limits, load_policy(config))

    # dead_letter first: a crash between outputs (the between-outputs fault point) leaves the
    # later ones behind, which the next session catches up from the lake's positions.
    def start_at() -> Position:
        """Where an output never written begins: what telemetry holds."""
        return read_position(telemetry.table)

    later, rules, deliveries = state_and_rule_outputs(config, catalog, start_at, client,
                                                      fault_points)
    checkpointed: list[Output] = []
    checkpoints = CheckpointStore.for_config(config)
    if any(d.enabled for d in config.detectors) or any(
            r.enabled and r.alert for r in config.rules):
        from sensorlake.alerts.setup import alerting

        anomalies, loops = alerting(config, catalog, checkpoints, start_at, fault_points)
        checkpointed.append(anomalies)
        deliveries += loops
    if config.lake.rollups:
        from sensorlake.rollup.output import rollup_outputs

        checkpointed += rollup_outputs(catalog, namespace, checkpoints, start_at, fault_points)
    worker = Worker(config, client, [dead, telemetry, *later, *checkpointed], dead, decoder,
                    metrics, fault_points)
    worker.rule_counters = lambda: {rule.name: asdict(rule.counters) for rule in rules}
    worker.deliveries = deliveries
    return worker


def state_and_rule_outputs(config: Config, catalog: Catalog, start_at: Callable[[], Position],
                           client: StreamClient, fault_points: Faults
                           ) -> tuple[list[Output], list[CompiledRule], list[Delivery]]:
    """Device state, and the outputs of every enabled rule's actions, with the rules they run
    and the loops that deliver their side effects; rules cost nothing when there are none."""
    from sensorlake.state.output import DeviceStateOutput
    from sensorlake.state.store import StateStore

    store = StateStore.for_config(config)
    running = [rule for rule in config.rules if rule.enabled and rule.actions != ["alert"]]
    if not running:
        return [DeviceStateOutput(store, start_at, fault_points=fault_points)], [], []
    from sensorlake.pipeline.database import database_url
    from sensorlake.pipeline.outbox import Outbox
    from sensorlake.rules.actions import ActionOutput, HttpTarget, RepublishTarget, Target
    from sensorlake.rules.evaluate import Evaluator, compile_rule
    from sensorlake.rules.outputs import RuleTableOutput

    evaluator = Evaluator()
    compiled = [compile_rule(rule) for rule in running]
    outputs: list[Output] = [DeviceStateOutput(
        store, start_at, [r for r in compiled if r.config.state], evaluator, fault_points)]
    outbox = Outbox(database_url(config), config.lake.namespace)
    deliveries: list[Delivery] = []
    sending = Evaluator()  # its own: never waits for the commit thread's evaluations
    for rule in compiled:
        if rule.config.table:
            outputs.append(RuleTableOutput(rule, evaluator, catalog, config.lake.namespace,
                                           start_at, fault_points,
                                           hold_s=config.lake.rule_flush_interval))
        targets: list[Target] = []
        if rule.config.republish:
            targets.append(RepublishTarget(client))
        if rule.config.http:
            targets.append(HttpTarget(rule.config.http))
        for n, target in enumerate(targets):
            counts = n == 0 and not rule.config.table and not rule.config.state
            action = ActionOutput(rule, sending, target, outbox, start_at, counts=counts,
                                  fault_points=fault_points)
            outputs.append(action)
            deliveries.append(action.deliver)
    return outputs, compiled, deliveries


SWITCH_INTERVAL_S = 0.0005
"""How long the worker's event loop, decoding in Python, may keep the interpreter from the
commit thread. The commit thread lets go of the interpreter whenever DuckDB, Parquet or SQLite
work, and each time waits this long to get it back: at Python's 5 ms, under load, a device
state summary that takes 30 ms alone took 300 ms, a rule's evaluation ten times its own time
(`benchmarks/rules.py`)."""


async def run_worker(config: Config) -> None:
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def give_up() -> None:
        log.error("the worker could not finish within %.0f s of being asked to stop; exiting",
                  STOP_GRACE_S)
        os._exit(1)

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            loop.call_later(STOP_GRACE_S, give_up)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    client = StreamClient(config)
    await client.connect(name="sensorlake-writer")
    try:
        metrics = WriterMetrics()
        worker = await asyncio.to_thread(build_worker, config, client, metrics,
                                         Faults.from_env(config.data_dir))

        async def status(msg: Msg) -> None:
            await msg.respond(orjson.dumps({**worker.status(),
                                            "metrics": metrics.render().decode()}))

        async def follow_registry() -> None:
            while True:
                await asyncio.sleep(POLICY_REFRESH_S)
                try:
                    policy = await asyncio.to_thread(load_policy, config)
                except Exception as exc:  # a registry being written: try again shortly
                    log.debug("cannot read the device registry: %s", exc)
                    continue
                if worker.decoder is not None:
                    worker.decoder.policy = policy

        await client.serve(WRITER_STATUS_SUBJECT, status)
        background = [
            asyncio.create_task(follow_registry(), name="follow the device registry"),
            asyncio.create_task(keep_lake(config, metrics), name="lake maintenance"),
            *(asyncio.create_task(deliver(stop), name="side-effect delivery")
              for deliver in worker.deliveries),
        ]
        try:
            await worker.run(stop)
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        log.info("worker stopped after committing what it held")
    finally:
        await client.close()
