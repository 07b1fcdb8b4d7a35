"""The NATS connection sensorlake's processes share, and the streams and consumers they rely on.

One connection to sensorlake's own account reaches the TELEMETRY stream and, with the embedded
server, the devices' account's JetStream too (`MQTT_API`), where the MQTT listener stores QoS 1/2
publishes in `$MQTT_msgs` before it acknowledges them (see `partitions.py`).

No call here waits for a PONG under a timeout: nats-py's `flush(timeout)` leaves the timed-out
future in its queue, and the late PONG then kills the connection's read loop
(`InvalidStateError`) — a frozen server would silently stop the pipeline for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import NotFoundError

from sensorlake.config import Config
from sensorlake.errors import StreamError
from sensorlake.stream.feed import Delivery, Drained, PullFeed
from sensorlake.stream.partitions import (
    LEGACY_WRITER_CONSUMER,
    MQTT_FILTERS,
    MQTT_STREAM,
    MQTT_SUBJECT_PREFIX,
    WRITER_CONSUMER_PREFIX,
    Account,
    MqttCutover,
    Partition,
)
from sensorlake.stream.server import (
    MQTT_API,
    StreamCredentials,
    devices_account_credentials,
    mqtt_credentials,
    stream_credentials,
)
from sensorlake.stream.subjects import BOOKKEEPING_PREFIX, subject_for_topic

log = logging.getLogger(__name__)

JS_API = "$JS.API"
ACK_WAIT_S = 24 * 3600.0
"""A session's deliveries are acked after each commit; redelivery would only bring duplicates."""
IDLE_CONSUMER_S = 3600.0
"""A session consumer of a limits stream nobody reads any more disappears after this."""


@dataclass(frozen=True)
class StreamPosition:
    identity: str
    """`name@created`: a recreated stream restarts its sequence numbers, so seqs of another
    identity must never be compared with ours."""
    last_seq: int


class StreamClient:
    """The process's NATS connection with JetStream; it reconnects forever while the server
    restarts."""

    def __init__(self, config: Config, credentials: StreamCredentials | None = None) -> None:
        self._config = config
        self._creds = credentials or stream_credentials(config)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._mqtt_creds = mqtt_credentials(config)
        self._mqtt_nc: NATS | None = None
        """With named topic roots: a connection in the devices' account (see MQTT_API)."""
        self._mqtt_js: JetStreamContext | None = None
        self._devices_nc: NATS | None = None
        """Where the republish action publishes (publish_to_devices)."""
        self.reconnects = 0
        """Grows with every reconnect: pull requests and deliveries in flight may be gone, so
        readers start over from what the lake holds."""

    @property
    def stream_name(self) -> str:
        return self._config.stream.name

    @property
    def subject_prefix(self) -> str:
        return self._config.stream.subject_prefix

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise StreamError("not connected to NATS", hint="call connect() first")
        return self._js

    @property
    def _conn(self) -> NATS:
        if self._nc is None:
            raise StreamError("not connected to NATS", hint="call connect() first")
        return self._nc

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(
        self, *, name: str = "sensorlake", connect_s: float = 5.0, reconnect: bool = True
    ) -> None:
        """With `reconnect` (long-running workers) the client also retries the first connect
        forever; one-shot commands pass False and fail fast instead."""
        self._nc = await self._open(self._creds, name, connect_s, reconnect)
        self._js = self._nc.jetstream(timeout=10.0)
        if self._mqtt_creds is not None:
            self._mqtt_nc = await self._open(self._mqtt_creds, f"{name}-mqtt", connect_s,
                                             reconnect)
            self._mqtt_js = self._mqtt_nc.jetstream(timeout=10.0)
        elif self._config.embedded_nats:
            self._mqtt_js = self._nc.jetstream(prefix=MQTT_API, timeout=10.0)

    async def _open(self, creds: StreamCredentials, name: str, connect_s: float,
                    reconnect: bool) -> NATS:
        async def _quiet(exc: Exception) -> None:
            log.debug("nats: %s", exc)

        async def _reconnected() -> None:
            self.reconnects += 1
            log.info("reconnected to NATS")

        try:
            return await nats.connect(
                creds.url,
                user=creds.user or None,
                password=creds.password or None,
                name=name,
                connect_timeout=connect_s,
                max_reconnect_attempts=-1 if reconnect else 1,  # 0 would mean "retry forever"
                reconnect_time_wait=0.25,
                allow_reconnect=reconnect,
                error_cb=_quiet,
                reconnected_cb=_reconnected,
                pending_size=64 * 1024 * 1024,
            )
        except (NatsError, OSError) as exc:
            raise StreamError(
                f"cannot connect to NATS at {creds.url}: {exc}",
                hint="is `sensorlake up` running, or stream.url right?",
            ) from exc

    async def close(self) -> None:
        """Hand over what is buffered (acks above all), then close; never hangs on a dead or
        frozen server, and never cancels a PONG future (see the module docstring)."""
        for nc in (self._devices_nc, self._mqtt_nc, self._nc):
            if nc is None or nc.is_closed:  # (_devices_nc may be _nc: closed once)
                continue
            if nc.is_connected:
                flush = asyncio.ensure_future(nc.flush(timeout=3600))
                await asyncio.wait([flush], timeout=2)
            with contextlib.suppress(NatsError, OSError, asyncio.InvalidStateError):
                await nc.close()
        self._nc = self._js = self._mqtt_nc = self._mqtt_js = self._devices_nc = None

    def _jetstream(self, account: Account) -> tuple[JetStreamContext, str, NATS]:
        """The JetStream context of an account's streams, its API prefix, and the connection
        its deliveries and acks travel on."""
        if account is Account.SERVICE:
            return self.js, JS_API, self._conn
        if self._mqtt_js is None:
            raise StreamError("the devices' account is not reachable",
                              hint="the MQTT stream is read only with the embedded nats-server")
        if self._mqtt_nc is not None:
            return self._mqtt_js, JS_API, self._mqtt_nc
        return self._mqtt_js, MQTT_API, self._conn

    async def ensure_stream(self) -> StreamPosition:
        """Create the stream if it is missing, bring its limits in line with the config."""
        cfg = self._config.stream
        wanted = StreamConfig(
            name=cfg.name,
            subjects=[f"{cfg.subject_prefix}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=cfg.max_age_hours * 3600,
            max_bytes=cfg.max_bytes,
            max_msg_size=cfg.max_payload,
            discard=DiscardPolicy.OLD,
            duplicate_window=120,
            subject_transform=SubjectTransform(
                src=f"{cfg.subject_prefix}.$MQTT.>", dest=f"{BOOKKEEPING_PREFIX}.$MQTT.>"
            ),
        )
        try:
            try:
                info = await self.js.stream_info(cfg.name)
                info = await self.js.update_stream(wanted)
            except NotFoundError:
                info = await self.js.add_stream(wanted)
        except NatsError as exc:
            raise StreamError(f"cannot set up stream {cfg.name}: {exc}") from exc
        return StreamPosition(_identity(cfg.name, info.created), info.state.last_seq)

    async def ensure_mqtt_stream(self) -> StreamPosition:
        """`$MQTT_msgs` as nats-server's MQTT listener creates it, so that a consumer can hold
        its messages before the first device connects (the listener accepts a stream that
        exists already)."""
        js, _, _ = self._jetstream(Account.MQTT)
        try:
            try:
                info = await js.stream_info(MQTT_STREAM)
            except NotFoundError:
                info = await js.add_stream(StreamConfig(
                    name=MQTT_STREAM, subjects=[f"{MQTT_SUBJECT_PREFIX}.>"],
                    retention=RetentionPolicy.INTEREST, storage=StorageType.FILE,
                    num_replicas=1,
                ))
        except NatsError as exc:
            raise StreamError(f"cannot set up the MQTT listener's stream: {exc}") from exc
        return StreamPosition(_identity(MQTT_STREAM, info.created), info.state.last_seq)

    async def position(self) -> StreamPosition:
        try:
            info = await self.js.stream_info(self.stream_name)
        except NatsError as exc:
            raise StreamError(f"cannot read stream {self.stream_name}: {exc}") from exc
        return StreamPosition(_identity(self.stream_name, info.created), info.state.last_seq)

    async def partitions(self) -> list[Partition]:
        """What the pipeline reads, with each stream's live identity and last sequence."""
        marker = MqttCutover.read(self._config.data_dir / "nats") if self._mqtt_js else None
        if marker is None:
            return [self._telemetry_partition(await self.position(), None)]
        telemetry, mqtt = await asyncio.gather(self.position(), self.ensure_mqtt_stream())
        cutover = marker.seq if marker.telemetry_identity == telemetry.identity else 0
        return [
            self._telemetry_partition(telemetry, cutover),
            Partition(MQTT_STREAM, mqtt.identity, Account.MQTT, MQTT_FILTERS, acked=True,
                      subject_prefix=MQTT_SUBJECT_PREFIX, last_seq=mqtt.last_seq),
        ]

    def _telemetry_partition(self, telemetry: StreamPosition, cutover: int | None) -> Partition:
        return Partition(
            self.stream_name, telemetry.identity, Account.SERVICE,
            (f"{self.subject_prefix}.>",), acked=False, subject_prefix=self.subject_prefix,
            last_seq=telemetry.last_seq, cutover=cutover,
        )

    async def hold_mqtt_stream(self) -> None:
        """A first consumer on `$MQTT_msgs`, so it keeps every QoS 1 publish from now on until
        the pipeline's first session takes over (and acknowledges what it commits)."""
        js, _, _ = self._jetstream(Account.MQTT)
        await self._add_consumer(js, MQTT_STREAM, self._consumer_config(
            f"{WRITER_CONSUMER_PREFIX}hold", MQTT_FILTERS, 1, acked=True))

    def _consumer_config(self, name: str, filters: Sequence[str], start_seq: int, *,
                         acked: bool) -> ConsumerConfig:
        single = filters[0] if len(filters) == 1 else None
        return ConsumerConfig(
            durable_name=name,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_seq),
            ack_policy=AckPolicy.ALL if acked else AckPolicy.NONE,
            ack_wait=ACK_WAIT_S if acked else None,
            max_ack_pending=self._config.stream.max_ack_pending if acked else None,
            inactive_threshold=None if acked else IDLE_CONSUMER_S,
            filter_subject=single,
            filter_subjects=None if single else list(filters),
            max_waiting=64,
        )

    @staticmethod
    async def _add_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
        try:
            await js.add_consumer(stream, config)
        except NatsError as exc:
            raise StreamError(f"cannot create a consumer on {stream}: {exc}") from exc

    async def open_feed(self, partition: Partition, start_seq: int, wake: asyncio.Event
                        ) -> PullFeed:
        """A consumer of this session from `start_seq` on, and the feed reading it.

        Every older session consumer of the partition is deleted *after* the new one exists, so
        on an interest stream no message that is not yet committed is ever without interest.
        """
        js, api, nc = self._jetstream(partition.account)
        name = f"{WRITER_CONSUMER_PREFIX}{uuid.uuid4().hex[:12]}"
        await self._add_consumer(js, partition.name, self._consumer_config(
            name, partition.filters, start_seq, acked=partition.acked))
        try:
            names = [info.name for info in await js.consumers_info(partition.name)]
        except NatsError as exc:
            raise StreamError(f"cannot list the consumers of {partition.name}: {exc}") from exc
        for old in names:
            if old != name and (old.startswith(WRITER_CONSUMER_PREFIX)
                                or old == LEGACY_WRITER_CONSUMER):
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(partition.name, old)
        feed = PullFeed(nc, api, partition.name, name, wake, cutover=partition.cutover)
        await feed.start()
        return feed

    async def close_feed(self, partition: Partition, feed: PullFeed) -> None:
        """Stop reading; the consumer stays, so an interest stream keeps what is uncommitted."""
        await feed.stop()

    async def ack(self, partition: Partition, reply: str) -> None:
        """Ack one delivery of an ack-all consumer: everything up to it is acknowledged. Not
        flushed here (see the module docstring); nats-py's flusher sends it within moments."""
        _, _, nc = self._jetstream(partition.account)
        await nc.publish(reply, b"+ACK")

    async def pending(self, partition: Partition, consumer: str) -> int:
        """Messages of the partition not yet delivered to this consumer."""
        js, _, _ = self._jetstream(partition.account)
        info = await js.consumer_info(partition.name, consumer)
        return int(info.num_pending or 0)

    async def serve(self, subject: str, handler: Callable[[Msg], Awaitable[None]]) -> None:
        """Answer requests on a subject (status endpoints between sensorlake processes)."""
        await self._conn.subscribe(subject, cb=handler)

    async def answers(self, wait_s: float = 2.0) -> bool:
        """Whether the server answers a JetStream request now (it is not down or frozen)."""
        try:
            await self._conn.request(f"{JS_API}.INFO", b"", timeout=wait_s)
        except (NatsError, TimeoutError, StreamError):
            return False
        return True

    async def publish_to_devices(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish `(MQTT topic, payload)` pairs where MQTT clients subscribe: the devices'
        account of the embedded server (a connection opened on first use), or, with an external
        server, this connection's own account. Raises StreamError when they could not be
        handed to the server."""
        if self._devices_nc is None or self._devices_nc.is_closed:
            creds = devices_account_credentials(self._config)
            self._devices_nc = (self._conn if creds is None else
                                await self._open(creds, "sensorlake-republish", 5.0, True))
        nc = self._devices_nc
        try:
            for topic, payload in messages:
                await nc.publish(subject_for_topic("", topic).lstrip("."), payload)
            await nc.flush(timeout=5)
        except (NatsError, TimeoutError) as exc:
            raise StreamError(f"could not publish to the MQTT listener: {exc}",
                              hint="is nats-server running?") from exc

    async def request(self, subject: str, wait_s: float = 1.0) -> bytes | None:
        """One reply's data, or None when nobody answered in time."""
        if self._nc is None or not self._nc.is_connected:
            return None
        try:
            reply = await self._nc.request(subject, b"", timeout=wait_s)
        except (NatsError, TimeoutError):
            return None
        return bytes(reply.data)

    async def publish_many(
        self,
        subject: str,
        payloads: Sequence[bytes],
        ack_s: float = 10.0,
        msg_ids: Sequence[str] | None = None,
    ) -> list[int]:
        """Publish and wait for the stream's ack of every payload; returns their sequences.

        With `msg_ids`, the stream drops a payload whose id it has already stored within its
        duplicate window, so a client that retries after a lost answer stores nothing twice.
        """
        ids: Sequence[str | None] = msg_ids if msg_ids is not None else [None] * len(payloads)
        try:
            futures = [
                await self.js.publish_async(
                    subject, payload, wait_stall=ack_s,
                    headers={"Nats-Msg-Id": msg_id} if msg_id else None,
                )
                for payload, msg_id in zip(payloads, ids, strict=True)
            ]
            acks = await asyncio.wait_for(asyncio.gather(*futures), ack_s)
        except TimeoutError as exc:
            raise StreamError(
                f"the stream did not acknowledge the data within {ack_s:.0f} s",
                hint="retry; nothing that was not acknowledged is stored twice if you resend it",
            ) from exc
        except NatsError as exc:
            raise StreamError(
                f"the stream did not acknowledge the data: {str(exc) or type(exc).__name__}",
                hint="retry; nothing that was not acknowledged is stored twice if you resend it",
            ) from exc
        return [ack.seq for ack in acks]

    async def read_after(
        self, partitions: Sequence[Partition], after: Mapping[str, int], *, max_bytes: int
    ) -> tuple[list[tuple[Partition, Drained]], bool]:
        """Per partition, messages after `after[name]` up to what it holds now (for fresh
        queries; the partitions are read at once), and whether `max_bytes` of payload (per
        partition) cut that short: a backlog the worker has not caught up."""
        todo = [p for p in partitions if p.last_seq > after.get(p.name, 0)]
        reads = await asyncio.gather(*(
            self._read_partition(p, after.get(p.name, 0), max_bytes) for p in todo))
        out = [(p, drained) for p, (drained, _, _) in zip(todo, reads, strict=True)]
        return out, any(cut for _, _, cut in reads)

    async def _read_partition(self, partition: Partition, after_seq: int, max_bytes: int
                              ) -> tuple[Drained, int, bool]:
        js, api, nc = self._jetstream(partition.account)
        single = partition.filters[0] if len(partition.filters) == 1 else None
        info = await js.add_consumer(
            partition.name,
            ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after_seq + 1,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=5.0,
                mem_storage=True,
                filter_subject=single,
                filter_subjects=None if single else list(partition.filters),
            ),
        )
        # Readings at the time of asking; the stream's last message may be one the filter skips,
        # so waiting for its sequence would only wait for the fetch to expire.
        wanted = int(info.num_pending or 0)
        feed = PullFeed(nc, api, partition.name, info.name, cutover=partition.cutover)
        await feed.start()
        out: list[Delivery] = []
        last_seq = count = 0
        size = 0
        truncated = False
        try:
            while not truncated and count < wanted:
                drained = await feed.fetch(10_000, 16 * 1024 * 1024, 0.25)
                if not drained.delivered:
                    break
                for delivery in drained.deliveries:
                    if size >= max_bytes:
                        truncated = True
                        break
                    if partition.carries_readings(delivery):
                        out.append(delivery)
                        size += len(delivery.data)
                    last_seq = delivery.seq
                if not truncated:
                    last_seq = drained.last_seq
                count += drained.delivered
                if drained.last_seq >= partition.last_seq:
                    break
        finally:
            await feed.stop()
            with contextlib.suppress(NatsError):
                await js.delete_consumer(partition.name, info.name)
        return Drained(out, last_seq, count), size, truncated


def _identity(name: str, created: datetime | None) -> str:
    return f"{name}@{created.isoformat() if created else 'unknown'}"
