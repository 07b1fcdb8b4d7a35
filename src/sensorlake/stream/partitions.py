"""The sequences of stream messages the pipeline reads, each with a position of its own in the lake.

Readings reach sensorlake by two durable routes:

- the `TELEMETRY` stream (`stream.name`) holds HTTP ingest and what the MQTT listener delivers at
  QoS 0 — and, since the listener hands every MQTT publish on to NATS, a copy of each QoS 1/2
  publish that it queues for the stream *after* its PUBACK went out;
- `$MQTT_msgs`, in the devices' account, is where nats-server stores every QoS 1/2 publish *before*
  it answers with the PUBACK. It has interest retention: a message stays until every consumer
  with interest in it has acknowledged it. The pipeline keeps a consumer on it at all times and
  acknowledges only what the lake has committed, so a PUBACKed reading survives any crash.

The QoS 1/2 copies in TELEMETRY are skipped after the `cutover` (the TELEMETRY sequence when the
`$MQTT_msgs` consumer was first set up): from then on, those readings come from `$MQTT_msgs`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from sensorlake.stream.feed import Delivery
from sensorlake.stream.subjects import is_device_subject

MQTT_STREAM = "$MQTT_msgs"
MQTT_SUBJECT_PREFIX = "$MQTT.msgs"
WRITER_CONSUMER_PREFIX = "sl-writer-"
"""Consumers of the pipeline's sessions; a new session deletes every older one of them."""
LEGACY_WRITER_CONSUMER = "lake-writer"
"""The ack-all durable consumer of earlier versions, removed on the first start."""
MQTT_MARKER = "sensorlake-mqtt.json"
"""In the embedded server's store dir: the cutover, written once `$MQTT_msgs` has a consumer."""


class Account(Enum):
    SERVICE = "service"
    """sensorlake's own account: the TELEMETRY stream."""
    MQTT = "mqtt"
    """The devices' account, where the MQTT listener keeps its streams."""


@dataclass(frozen=True)
class Partition:
    name: str
    """The stream's name; rows carry it in their `stream` column, and with `seq` it names the
    message a reading came in."""
    identity: str
    """`name@created`: a recreated stream restarts its sequence numbers, so a position recorded
    for another identity must never be compared with this one's sequences."""
    account: Account
    filters: tuple[str, ...]
    acked: bool
    """Messages are kept until acknowledged (interest retention), so the pipeline acks what it
    has committed; otherwise acks serve nothing and none are sent."""
    subject_prefix: str
    """Stripped from a message's subject to give its MQTT topic."""
    last_seq: int = 0
    cutover: int | None = None
    """TELEMETRY only: past this sequence, QoS 1/2 copies are read from `$MQTT_msgs` instead."""

    def carries_readings(self, delivery: Delivery) -> bool:
        """Not the MQTT listener's bookkeeping or JetStream's own traffic, which a capture of
        any topic imports too. (Copies of QoS 1/2 publishes past the cutover are skipped by
        the feed already.)"""
        return is_device_subject(self.subject_prefix, delivery.subject)


@dataclass(frozen=True)
class MqttCutover:
    telemetry_identity: str
    seq: int

    @staticmethod
    def path(store_dir: Path) -> Path:
        return store_dir / MQTT_MARKER

    @classmethod
    def read(cls, store_dir: Path) -> MqttCutover | None:
        try:
            data = json.loads(cls.path(store_dir).read_text(encoding="utf-8"))
            return cls(str(data["telemetry"]), int(data["cutover"]))
        except (OSError, ValueError, KeyError):
            return None

    def write(self, store_dir: Path) -> None:
        store_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(store_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps({"telemetry": self.telemetry_identity, "cutover": self.seq}),
                       encoding="utf-8")
        tmp.replace(self.path(store_dir))


MQTT_FILTERS = (f"{MQTT_SUBJECT_PREFIX}.>",)
"""All of `$MQTT_msgs`: it holds only what devices were allowed to publish, which with named
`stream.topics` is those topics alone (a filter per root would only slow the consumer down)."""


@dataclass(frozen=True)
class Position:
    """How far an output has committed: per partition, the highest sequence it holds, and the
    identity of the stream that sequence belongs to."""

    seqs: Mapping[str, int] = field(default_factory=dict)
    identities: Mapping[str, str] = field(default_factory=dict)

    def seq(self, partition: Partition) -> int:
        """The committed sequence of `partition`; 0 when it was recorded for another stream of
        the same name (recreated: its sequence numbers started over)."""
        if self.identities.get(partition.name) != partition.identity:
            return 0
        return self.seqs.get(partition.name, 0)

    def for_partitions(self, partitions: Iterable[Partition]) -> Position:
        """Only what holds for these live partitions (stale identities dropped)."""
        live = [p for p in partitions if self.seq(p)]
        return Position({p.name: self.seq(p) for p in live}, {p.name: p.identity for p in live})

    def merged(self, other: Position) -> Position:
        """The further of both, partition by partition (`other`'s identity wins a mismatch)."""
        seqs = dict(self.seqs)
        identities = dict(self.identities)
        for name, seq in other.seqs.items():
            if identities.get(name) != other.identities.get(name):
                seqs[name] = seq
            else:
                seqs[name] = max(seqs.get(name, 0), seq)
            identities[name] = other.identities[name]
        return Position(seqs, identities)

    def covers(self, other: Position) -> bool:
        return all(
            self.identities.get(name) == other.identities.get(name)
            and self.seqs.get(name, 0) >= seq
            for name, seq in other.seqs.items()
        )

    def encode(self) -> str:
        return json.dumps({name: [self.identities.get(name, ""), seq]
                           for name, seq in sorted(self.seqs.items())}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Position:
        data = json.loads(text)
        return cls({name: int(v[1]) for name, v in data.items()},
                   {name: str(v[0]) for name, v in data.items()})
