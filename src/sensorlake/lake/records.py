"""Stream messages decoded into readings, and readings turned into Arrow tables.

One message holds one reading (a JSON object) or several (a JSON array, as gateways and the HTTP
ingest send them). Whatever cannot be decoded or typed becomes a dead letter carrying the reason
and the raw bytes, so nothing is lost and nothing stops the writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.ingest.identity import (
    DEVICE_KEYS,
    EPOCH_SCALES,
    MAX_US,
    MIN_US,
    NS_PER_US,
    TIME_KEYS,
    IdentityRules,
    TimeValueError,
)
from sensorlake.lake.schema import build_column, infer_type, merge_types
from sensorlake.lake.tables import BASE_COLUMNS, DEAD_LETTER_ARROW, RESERVED
from sensorlake.stream.feed import Delivery
from sensorlake.stream.subjects import is_device_subject, topic_for_subject

_TS_TYPE = pa.timestamp("us", tz="UTC")
_RENAMED = RESERVED - {"device_id", "ts"}
_UNIFORM_MIN = 8
_ONLY_DICT = {dict}
_ONLY_STR = {str}
_NUMBERS = {int, float}


@dataclass
class DeadLetters:
    topics: list[str] = field(default_factory=list)
    device_ids: list[str | None] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    received_us: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)

    def add(
        self, topic: str, device_id: str | None, seq: int, received: int, reason: str, raw: bytes
    ) -> None:
        self.topics.append(topic)
        self.device_ids.append(device_id)
        self.seqs.append(seq)
        self.received_us.append(received)
        self.reasons.append(reason)
        self.raws.append(raw)

    def __len__(self) -> int:
        return len(self.seqs)

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_arrays(
            [
                pa.array(self.topics, pa.string()),
                pa.array(self.device_ids, pa.string()),
                pa.array(self.seqs, pa.int64()),
                pa.array(self.received_us, _TS_TYPE),
                pa.array(self.reasons, pa.string()),
                pa.array(self.raws, pa.binary()),
            ],
            schema=DEAD_LETTER_ARROW,
        )


@dataclass
class Batch:
    """Readings decoded from consecutive stream messages, column-wise for cheap Arrow building."""

    topics: list[str] = field(default_factory=list)
    device_ids: list[str | None] = field(default_factory=list)
    ts_us: list[int] = field(default_factory=list)
    received_us: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    originals: list[bytes | dict[str, Any]] = field(default_factory=list)
    """What the device sent for each reading (message bytes or array item), for dead letters."""
    dead: DeadLetters = field(default_factory=DeadLetters)
    first_seq: int = 0
    last_seq: int = 0
    nbytes: int = 0
    messages: int = 0
    maybe_bools: bool = False
    """Some message's bytes contain `true` or `false` (a cheap, conservative test)."""

    def __len__(self) -> int:
        return len(self.seqs)


class Decoder:
    """Turns raw stream messages into a Batch, applying the identity and time conventions."""

    _TOPIC_CACHE = 100_000
    """Subjects remembered; a fleet repeats the same few per device, so conversion is rare."""

    def __init__(self, identity: IdentityRules, subject_prefix: str) -> None:
        self._identity = identity
        self._prefix = subject_prefix
        self._topics: dict[str, str | None] = {}

    def _topic(self, subject: str) -> str | None:
        """The MQTT topic of a stream subject; None for the MQTT listener's own bookkeeping,
        which a capture of any topic imports along with the readings."""
        topic = self._topics.get(subject, "")
        if topic == "":
            if len(self._topics) >= self._TOPIC_CACHE:
                self._topics.clear()
            topic = (topic_for_subject(self._prefix, subject)
                     if is_device_subject(self._prefix, subject) else None)
            self._topics[subject] = topic
        return topic

    def add_delivery(self, batch: Batch, delivery: Delivery) -> bool:
        """Decode one stream message; False for one that is not a reading."""
        topic = self._topic(delivery.subject)
        if topic is None:
            return False
        self._add(batch, delivery.seq, topic, delivery.timestamp_ns // 1000, delivery.data)
        return True

    def add(self, batch: Batch, seq: int, subject: str, received_us: int, data: bytes) -> None:
        self._add(batch, seq, topic_for_subject(self._prefix, subject), received_us, data)

    def _add(self, batch: Batch, seq: int, topic: str, received_us: int, data: bytes) -> None:
        if not batch.first_seq:
            batch.first_seq = seq
        batch.last_seq = max(batch.last_seq, seq)
        batch.nbytes += len(data)
        batch.messages += 1
        if not batch.maybe_bools and (b"true" in data or b"false" in data):
            batch.maybe_bools = True
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            batch.dead.add(topic, None, seq, received_us, f"invalid JSON: {exc}", data)
            return
        if isinstance(value, dict):
            self._add_reading(batch, value, topic, seq, received_us, data)
        elif isinstance(value, list):
            if self._add_uniform(batch, value, topic, seq, received_us):
                return
            for item in value:
                if isinstance(item, dict):
                    self._add_reading(batch, item, topic, seq, received_us, None)
                else:
                    batch.dead.add(
                        topic, None, seq, received_us,
                        "array item is not a JSON object", orjson.dumps(item),
                    )
        else:
            batch.dead.add(
                topic, None, seq, received_us, "payload is not a JSON object or array", data
            )

    def _add_uniform(
        self, batch: Batch, items: list[Any], topic: str, seq: int, received_us: int
    ) -> bool:
        """A whole array at once, when its items are alike enough for column-wise identity and
        time: all objects, device named the same way (or not at all), `ts` numeric everywhere
        (or absent with its aliases), no field colliding with a base column. HTTP batches
        usually are; anything else returns False and goes item by item."""
        n = len(items)
        if n < _UNIFORM_MIN or set(map(type, items)) != _ONLY_DICT:
            return False
        keys: set[str] = set().union(*items)
        if not _RENAMED.isdisjoint(keys):
            return False
        device_keys = [k for k in DEVICE_KEYS if k in keys]
        if not device_keys:
            level = self._identity.device_id({}, topic)
            devices: list[str | None] = [level] * n
        elif device_keys == ["device_id"]:
            devices = [p.get("device_id") for p in items]
            if set(map(type, devices)) != _ONLY_STR or "" in devices:
                return False
        else:
            return False
        time_keys = [k for k in TIME_KEYS if k in keys]
        if not time_keys:
            stamps = [received_us] * n
        elif time_keys == ["ts"]:
            maybe = _epochs_to_us([p.get("ts") for p in items])
            if maybe is None:
                return False
            stamps = maybe
        else:
            return False
        batch.topics.extend([topic] * n)
        batch.device_ids.extend(devices)
        batch.ts_us.extend(stamps)
        batch.received_us.extend([received_us] * n)
        batch.seqs.extend([seq] * n)
        batch.payloads.extend(items)
        batch.originals.extend(items)
        return True

    def _add_reading(
        self,
        batch: Batch,
        payload: dict[str, Any],
        topic: str,
        seq: int,
        received_us: int,
        raw: bytes | None,
    ) -> None:
        original: bytes | dict[str, Any] = raw if raw is not None else payload
        device_id = self._identity.device_id(payload, topic)
        try:
            ts = self._identity.event_time_us(payload, received_us)
        except TimeValueError as exc:
            batch.dead.add(
                topic, device_id, seq, received_us, f"field 'ts': {exc}",
                raw if raw is not None else orjson.dumps(payload),
            )
            return
        # `device_id` and `ts` in the payload fill the base columns of the same name (which
        # batch_to_arrow takes from the lists below, never from the payload); other base
        # names would collide, so they keep their value under a `payload_` name.
        if not _RENAMED.isdisjoint(payload.keys()):
            payload = {(f"payload_{k}" if k in _RENAMED else k): v for k, v in payload.items()}
        batch.topics.append(topic)
        batch.device_ids.append(device_id)
        batch.ts_us.append(ts)
        batch.received_us.append(received_us)
        batch.seqs.append(seq)
        batch.payloads.append(payload)
        batch.originals.append(original)


def _epochs_to_us(values: list[Any]) -> list[int] | None:
    """epoch_to_us over a whole column in Arrow; None unless every value is a plain number."""
    if not set(map(type, values)) <= _NUMBERS:
        return None
    epochs = pa.array(values, type=pa.float64())
    magnitude = pc.abs(epochs)
    us = pc.divide(epochs, NS_PER_US)
    for limit, factor in reversed(EPOCH_SCALES):
        us = pc.if_else(pc.less(magnitude, limit), pc.multiply(epochs, factor), us)
    low, high = pc.min_max(us).values()
    if low.as_py() < MIN_US or high.as_py() > MAX_US:
        return None  # the item-by-item path names the offending reading
    result: list[int] = pc.cast(pc.trunc(us), pa.int64()).to_pylist()
    return result


def evolve_schema(batch: Batch, schema: pa.Schema) -> pa.Schema:
    """`schema` plus the columns and struct fields this batch brings; unchanged if none."""
    known = set(schema.names)
    # Every payload's keys in first-seen order (so new columns keep the payload's order),
    # gathered in C: iterating a dict yields its keys.
    new_keys = [k for k in dict.fromkeys(chain.from_iterable(batch.payloads)) if k not in known]
    nested = [f for f in schema if f.name not in BASE_COLUMNS and _nested(f.type)]
    if not new_keys and not nested:
        return schema
    fields = {f.name: f for f in schema}
    for name in [*new_keys, *(f.name for f in nested)]:
        typ = fields[name].type if name in fields else None
        values = [p.get(name) for p in batch.payloads]
        # A scalar's type follows from its Python type alone; only objects and arrays need a
        # look inside, value by value, for the fields they may add.
        for kind in dict.fromkeys(map(type, values)):  # first seen first: it wins conflicts
            if kind is dict or kind is list:
                for value in values:
                    if type(value) is kind:
                        typ = merge_types(typ, infer_type(value))
            elif kind is not type(None):
                typ = merge_types(typ, infer_type(next(v for v in values if type(v) is kind)))
        if typ is None:
            continue
        fields[name] = fields[name].with_type(typ) if name in fields else pa.field(name, typ)
    evolved = pa.schema(list(fields.values()), metadata=schema.metadata)
    return schema if evolved.equals(schema) else evolved


def _nested(typ: pa.DataType) -> bool:
    return bool(pa.types.is_struct(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ))


def batch_to_arrow(batch: Batch, schema: pa.Schema) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The batch as a table of exactly `schema` (missing fields null), rows sorted by
    device_id, ts; plus (row, reason) for readings that conflict with the schema — those rows
    are left out of the table and belong in the dead-letter table."""
    conflicts: dict[int, str] = {}
    arrays: list[pa.Array] = []
    base = {
        "topic": batch.topics,
        "device_id": batch.device_ids,
        "ts": batch.ts_us,
        "received_at": batch.received_us,
        "seq": batch.seqs,
    }
    payload_fields = [f for f in schema if f.name not in base]
    columns = _payload_columns_fast(batch, payload_fields)
    for f in schema:
        if f.name in base:
            arrays.append(pa.array(base[f.name], type=f.type))
            continue
        if columns is not None:
            arrays.append(columns[f.name])
            continue
        values = [p.get(f.name) for p in batch.payloads]
        array, bad = build_column(values, f.type, f.name)
        for row, reason in bad.items():
            conflicts.setdefault(row, reason)
        arrays.append(array)
    table = pa.Table.from_arrays(arrays, schema=schema)
    if conflicts:
        keep = pa.array([i not in conflicts for i in range(len(batch))])
        table = table.filter(keep)
    if table.num_rows > 1:
        table = table.sort_by([("device_id", "ascending"), ("ts", "ascending")])
    return table, sorted(conflicts.items())


def _payload_columns_fast(batch: Batch, fields: list[pa.Field]) -> dict[str, pa.Array] | None:
    """Every payload column in one C++ conversion, or None when that cannot be trusted.

    Arrow refuses strings where numbers are due (numeric strings, conflicts) — then the
    per-column path sorts them out. It would silently read booleans as numbers, so batches
    whose raw bytes hold `true`/`false` anywhere take the per-column path too. Unknown keys
    cannot be dropped silently: evolve_schema has already added every key of this batch.
    """
    if batch.maybe_bools or not fields:
        return None
    try:
        struct = pa.array(batch.payloads, type=pa.struct(fields))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return None
    return {f.name: struct.field(i) for i, f in enumerate(fields)}


def uncommitted_table(batch: Batch, schema: pa.Schema) -> pa.Table:
    """Readings not yet in the lake as queries see them: the table's schema plus whatever new
    fields they bring, conflicting rows left out (the writer will dead-letter those)."""
    table, _ = batch_to_arrow(batch, evolve_schema(batch, schema))
    return table


def conflicts_to_dead(batch: Batch, conflicts: list[tuple[int, str]], dead: DeadLetters) -> None:
    for row, reason in conflicts:
        original = batch.originals[row]
        dead.add(
            batch.topics[row], batch.device_ids[row], batch.seqs[row], batch.received_us[row],
            reason, original if isinstance(original, bytes) else orjson.dumps(original),
        )
