"""The uncommitted tail: readings in the stream that the telemetry table does not hold yet.

A query reads every partition of the stream past the position the telemetry table has committed,
and decodes it exactly as the worker will (naming rules, identity checks, types), so a reading is
queryable the moment the stream has acknowledged it. When no stream is reachable the lake alone
answers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pyarrow as pa
from nats.errors import Error as NatsError
from pyiceberg.table import Table

from sensorlake.config import Config
from sensorlake.devices.policy import load_policy
from sensorlake.errors import SensorlakeError
from sensorlake.ingest.identity import IdentityRules
from sensorlake.lake.fields import FieldLimits
from sensorlake.lake.records import Decoder
from sensorlake.lake.tables import TELEMETRY, read_position
from sensorlake.query.engine import QueryEngine
from sensorlake.runfile import running
from sensorlake.stream.connection import StreamClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tail:
    table: pa.Table | None
    truncated: bool = False
    """The stream held more uncommitted data than a query reads (query.tail_bytes): the newest
    readings are left out until the writer catches up."""
    source: Table | None = None
    """The telemetry table as loaded to find the tail: the query reads this very snapshot, so
    the table is loaded once per query, and the tail and the lake meet exactly."""

    @property
    def loaded(self) -> dict[str, Table]:
        return {TELEMETRY: self.source} if self.source is not None else {}

    @property
    def notes(self) -> list[str]:
        if not self.truncated:
            return []
        return ["the writer is behind: only the oldest uncommitted readings (up to "
                "query.tail_bytes) were included; newer ones appear as it catches up"]


NO_TAIL = Tail(None)


def _telemetry(engine: QueryEngine) -> Table | None:
    return engine.load(TELEMETRY) if TELEMETRY in engine.table_names() else None


async def stream_tail(config: Config, engine: QueryEngine) -> Tail:
    """For a separate process (the CLI): connect, read the tail, disconnect."""
    if config.embedded_nats and running(config.data_dir) is None:
        return NO_TAIL  # `up` is not running on this data dir: the stream is not being served
    client = StreamClient(config)
    try:
        await client.connect(name="sensorlake-query", connect_s=1.0, reconnect=False)
    except SensorlakeError:
        return NO_TAIL
    try:
        return await tail_from_stream(client, config, engine)
    finally:
        await client.close()


async def tail_from_stream(client: StreamClient, config: Config, engine: QueryEngine) -> Tail:
    """Telemetry readings in the stream that the lake has not committed yet (NO_TAIL when
    there are none or no stream answers), decoded exactly as the writer will decode them."""
    table = await asyncio.to_thread(_telemetry, engine)  # catalog I/O: off the event loop
    if table is None:
        return NO_TAIL
    try:
        partitions = await client.partitions()
        position = read_position(table)
        parts, truncated = await client.read_after(
            partitions, {p.name: position.seq(p) for p in partitions},
            max_bytes=config.query.tail_bytes)
    except (SensorlakeError, NatsError, TimeoutError) as exc:
        log.warning("could not read the stream tail: %s", exc)
        return NO_TAIL
    if not any(drained.deliveries for _, drained in parts):
        return Tail(None, truncated, table)
    decoder = Decoder(IdentityRules(config.ingest.device_id_from), table.schema().as_arrow(),
                      FieldLimits.from_config(config), await asyncio.to_thread(load_policy, config))
    batch = decoder.decode(parts)
    return Tail(batch.readings if len(batch) else None, truncated, table)
