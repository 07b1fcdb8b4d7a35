"""The lake writer as a process of its own (`sensorlake worker`).

`sensorlake up` runs it as a supervised child so that decoding and Parquet writing get a core of
their own instead of sharing one interpreter with the HTTP API; scaled out, several run against
one NATS cluster. It answers status requests (readiness and its metrics) over NATS, which is how
the API's /healthz and /metrics see it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import orjson
from nats.aio.msg import Msg

from sensorlake.config import Config
from sensorlake.lake.catalog import open_catalog
from sensorlake.lake.writer import LakeWriter
from sensorlake.metrics import WriterMetrics
from sensorlake.stream.connection import StreamClient
from sensorlake.stream.subjects import WRITER_STATUS_SUBJECT

log = logging.getLogger(__name__)


async def writer_status(client: StreamClient, wait_s: float = 1.0) -> dict[str, Any] | None:
    """What the lake writer reports about itself (readiness, committed sequences, metrics), or
    None when no writer answers in time."""
    reply = await client.request(WRITER_STATUS_SUBJECT, wait_s=wait_s)
    if reply is None:
        return None
    status: dict[str, Any] = orjson.loads(reply)
    return status


async def run_worker(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = StreamClient(config)
    await client.connect(name="sensorlake-writer")
    try:
        catalog = await asyncio.to_thread(open_catalog, config)
        metrics = WriterMetrics()
        writer = LakeWriter(config, client, catalog, metrics)

        async def status(msg: Msg) -> None:
            await msg.respond(orjson.dumps({
                "ready": writer.ready.is_set(),
                "committed": writer.committed,
                "metrics": metrics.render().decode(),
            }))

        await client.serve(WRITER_STATUS_SUBJECT, status)
        await writer.run(stop)
        log.info("lake writer stopped after committing what it held")
    finally:
        await client.close()
