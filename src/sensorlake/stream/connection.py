"""The NATS connection sensorlake's workers share, and the stream and consumers they rely on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
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
from sensorlake.stream.feed import Delivery, PullFeed
from sensorlake.stream.server import StreamCredentials, stream_credentials
from sensorlake.stream.subjects import BOOKKEEPING_PREFIX

log = logging.getLogger(__name__)

WRITER_CONSUMER = "lake-writer"


@dataclass(frozen=True)
class StreamPosition:
    identity: str
    """`name@created`: a recreated stream restarts its sequence numbers, so seqs of another
    identity must never be compared with ours."""
    last_seq: int


class StreamClient:
    """One NATS connection with JetStream; reconnects forever while the server restarts."""

    def __init__(self, config: Config, credentials: StreamCredentials | None = None) -> None:
        self._config = config
        self._creds = credentials or stream_credentials(config)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None

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
        async def _quiet(exc: Exception) -> None:
            log.debug("nats: %s", exc)

        try:
            self._nc = await nats.connect(
                self._creds.url,
                user=self._creds.user or None,
                password=self._creds.password or None,
                name=name,
                connect_timeout=connect_s,
                max_reconnect_attempts=-1 if reconnect else 1,  # 0 would mean "retry forever"
                reconnect_time_wait=0.25,
                allow_reconnect=reconnect,
                error_cb=_quiet,
                pending_size=64 * 1024 * 1024,
            )
        except (NatsError, OSError) as exc:
            raise StreamError(
                f"cannot connect to NATS at {self._creds.url}: {exc}",
                hint="is `sensorlake up` running, or stream.url right?",
            ) from exc
        self._js = self._nc.jetstream(timeout=10.0)

    async def close(self) -> None:
        """Flush what is buffered (acks above all), then close; never hangs on a dead server."""
        if self._nc is not None and not self._nc.is_closed:
            if self._nc.is_connected:
                with contextlib.suppress(NatsError, TimeoutError):
                    await self._nc.flush(timeout=2)
            await self._nc.close()
        self._nc = None
        self._js = None

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

    async def position(self) -> StreamPosition:
        try:
            info = await self.js.stream_info(self.stream_name)
        except NatsError as exc:
            raise StreamError(f"cannot read stream {self.stream_name}: {exc}") from exc
        return StreamPosition(_identity(self.stream_name, info.created), info.state.last_seq)

    async def writer_feed(self, ack_wait: float) -> PullFeed:
        """The lake writer's durable pull consumer (created or updated), as a fast feed."""
        config = ConsumerConfig(
            durable_name=WRITER_CONSUMER,
            ack_policy=AckPolicy.ALL,
            ack_wait=ack_wait,
            max_ack_pending=self._config.stream.max_ack_pending,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=f"{self.subject_prefix}.>",
            max_waiting=64,
        )
        try:
            await self.js.add_consumer(self.stream_name, config)
        except NatsError as exc:
            raise StreamError(f"cannot create the lake writer's consumer: {exc}") from exc
        feed = PullFeed(self._conn, self.stream_name, WRITER_CONSUMER)
        await feed.start()
        return feed

    async def serve(self, subject: str, handler: Callable[[Msg], Awaitable[None]]) -> None:
        """Answer requests on a subject (status endpoints between sensorlake processes)."""
        await self._conn.subscribe(subject, cb=handler)

    async def request(self, subject: str, wait_s: float = 1.0) -> bytes | None:
        """One reply's data, or None when nobody answered in time."""
        if self._nc is None or not self._nc.is_connected:
            return None
        try:
            reply = await self._nc.request(subject, b"", timeout=wait_s)
        except (NatsError, TimeoutError):
            return None
        return bytes(reply.data)

    async def ack_through(self, reply: str) -> None:
        """Ack one delivery of an ack-all consumer: everything up to it is acknowledged."""
        await self._conn.publish(reply, b"+ACK")
        await self._conn.flush(timeout=5)

    async def consumer_pending(self, consumer: str = WRITER_CONSUMER) -> int:
        """Messages the consumer has not yet been delivered plus those delivered but unacked."""
        info = await self.js.consumer_info(self.stream_name, consumer)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

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
        except (NatsError, TimeoutError) as exc:
            raise StreamError(
                f"the stream did not acknowledge the data: {exc or type(exc).__name__}",
                hint="retry; nothing that was not acknowledged is stored twice if you resend it",
            ) from exc
        return [ack.seq for ack in acks]

    async def read_after(self, after_seq: int, *, max_bytes: int) -> tuple[list[Delivery], bool]:
        """Messages after `after_seq` up to what the stream holds now (for fresh queries), and
        whether `max_bytes` of payload cut that short (a backlog the writer has not caught up)."""
        position = await self.position()
        if position.last_seq <= after_seq:
            return [], False
        info = await self.js.add_consumer(
            self.stream_name,
            ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after_seq + 1,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=5.0,
                mem_storage=True,
                filter_subject=f"{self.subject_prefix}.>",
            ),
        )
        # Readings at the time of asking; the stream's last message may be bookkeeping that the
        # filter skips, so waiting for its sequence would only wait for the fetch to expire.
        wanted = int(info.num_pending or 0)
        feed = PullFeed(self._conn, self.stream_name, info.name)
        await feed.start()
        out: list[Delivery] = []
        size = 0
        truncated = False
        try:
            while not truncated and len(out) < wanted:
                batch = await feed.fetch(10_000, 16 * 1024 * 1024, 0.25)
                if not batch:
                    break
                for delivery in batch:
                    if size >= max_bytes:
                        truncated = True
                        break
                    out.append(delivery)
                    size += len(delivery.data)
                if out and out[-1].seq >= position.last_seq:
                    break
        finally:
            await feed.stop()
            with contextlib.suppress(NatsError):
                await self.js.delete_consumer(self.stream_name, info.name)
        return out, truncated


def _identity(name: str, created: datetime | None) -> str:
    return f"{name}@{created.isoformat() if created else 'unknown'}"
