"""Username + token MQTT, for devices that cannot hold a client certificate.

nats-server has one MQTT listener, and once devices are registered it demands a client
certificate. The gate takes plain MQTT on `server.mqtt_port`, checks the CONNECT packet's
username (the device name) and password (its token) against the registry, and then relays the
connection over TLS to nats-server with a certificate issued for that device's token. nats-server
therefore applies the very same per-device topic rules, and revoking the device (which removes
its users at the next reload) closes relayed connections too. Nothing of a refused connection is
forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from sensorlake.config import Config
from sensorlake.devices.registry import Registry
from sensorlake.errors import DeviceError
from sensorlake.hosts import is_wildcard

log = logging.getLogger(__name__)

CONNECT = 0x10
USERNAME_FLAG = 0x80
PASSWORD_FLAG = 0x40
WILL_FLAG = 0x04
MAX_CONNECT = 64 * 1024


class ProtocolError(DeviceError):
    """The first packet is not a well-formed MQTT CONNECT."""


@dataclass(frozen=True)
class Connect:
    level: int
    username: str
    password: str
    forward: bytes
    """The same CONNECT without username and password (the certificate speaks for the device)."""


def token_dir(config: Config, name: str) -> Path:
    return config.data_dir / "tokens" / name


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("CONNECT packet is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def varint(self) -> int:
        value, shift = 0, 0
        for _ in range(4):
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise ProtocolError("malformed length in CONNECT")

    def field(self) -> bytes:
        return self.take(self.u16())


def parse_connect(body: bytes) -> Connect:
    """The variable header and payload of a CONNECT (MQTT 3.1, 3.1.1 or 5)."""
    cur = _Cursor(body)
    protocol = cur.field()
    level = cur.u8()
    if protocol not in (b"MQTT", b"MQIsdp") or level not in (3, 4, 5):
        raise ProtocolError(f"not an MQTT 3.1/3.1.1/5 CONNECT (protocol {protocol!r} {level})")
    flags_at = cur.pos
    flags = cur.u8()
    cur.take(2)  # keep alive
    if level == 5:
        cur.take(cur.varint())  # properties
    cur.field()  # client id
    if flags & WILL_FLAG:
        if level == 5:
            cur.take(cur.varint())
        cur.field()
        cur.field()
    kept = cur.pos
    username = cur.field().decode("utf-8", "replace") if flags & USERNAME_FLAG else ""
    password = cur.field().decode("utf-8", "replace") if flags & PASSWORD_FLAG else ""
    stripped = bytearray(body[:kept])
    stripped[flags_at] = flags & ~(USERNAME_FLAG | PASSWORD_FLAG)
    forward = bytes([CONNECT]) + _varint(len(stripped)) + bytes(stripped)
    return Connect(level, username, password, forward)


async def read_connect(reader: asyncio.StreamReader) -> Connect:
    if (await reader.readexactly(1))[0] != CONNECT:
        raise ProtocolError("the first packet is not CONNECT")
    length, shift = 0, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    if length > MAX_CONNECT:
        raise ProtocolError(f"CONNECT of {length} bytes is too large")
    return parse_connect(await reader.readexactly(length))


def refusal(level: int) -> bytes:
    """CONNACK "not authorized" in the client's protocol version."""
    return b"\x20\x03\x00\x87\x00" if level == 5 else b"\x20\x02\x00\x05"


class TokenGate:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._server: asyncio.Server | None = None
        host = config.server.host
        self._upstream = "127.0.0.1" if is_wildcard(host) else host

    async def run(self) -> None:
        """Listen on the plain MQTT port once MQTT requires TLS (nats-server frees the port
        then); bind is retried while nats-server may still be releasing it after the switch."""
        registry = Registry(self._config.data_dir)
        while not await asyncio.to_thread(registry.exists):  # noqa: ASYNC110 (another process writes it)
            await asyncio.sleep(1.0)
        while self._server is None:
            try:
                self._server = await asyncio.start_server(
                    self._handle, self._config.server.host, self._config.server.mqtt_port)
            except OSError as exc:
                log.debug("token gate cannot listen yet: %s", exc)
                await asyncio.sleep(0.5)
        log.info("token MQTT on port %s", self._config.server.mqtt_port)
        async with self._server:
            await self._server.serve_forever()

    def _tls(self, name: str) -> ssl.SSLContext:
        folder = token_dir(self._config, name)
        context = ssl.create_default_context(cafile=str(self._config.data_dir / "ca" / "ca.crt"))
        context.load_cert_chain(folder / "device.crt", folder / "device.key")
        return context

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            try:
                connect = await asyncio.wait_for(read_connect(reader), 10)
            except (ProtocolError, asyncio.IncompleteReadError, TimeoutError) as exc:
                log.info("token MQTT from %s closed: %s", peer, exc)
                return
            device = None
            with contextlib.suppress(DeviceError):
                device = await asyncio.to_thread(
                    Registry(self._config.data_dir).get, connect.username)
            if device is None or not device.token_matches(connect.password):
                log.warning("token MQTT from %s refused for %r", peer, connect.username)
                writer.write(refusal(connect.level))
                await writer.drain()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self._upstream, self._config.server.mqtts_port,
                    ssl=self._tls(device.name), server_hostname="localhost")
            except (OSError, ssl.SSLError) as exc:
                log.error("token MQTT for %s cannot reach nats-server: %s", device.name, exc)
                return
            up_writer.write(connect.forward)
            await _relay(reader, writer, up_reader, up_writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    """Until either side closes; then both are closed."""
    tasks = [asyncio.create_task(_pipe(reader, up_writer)),
             asyncio.create_task(_pipe(up_reader, writer))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        up_writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await up_writer.wait_closed()
