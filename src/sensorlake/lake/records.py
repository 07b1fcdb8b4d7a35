"""Stream messages decoded, once, into the Arrow batch that every output of the pipeline takes.

One message holds one reading (a JSON object) or several (a JSON array, as gateways and the HTTP
ingest send them). Whatever cannot be decoded, named (see `fields.py`) or typed becomes a dead
letter carrying the reason and the raw bytes, so nothing is lost and nothing stops the pipeline.

The decoder keeps the schema readings are typed by: it starts as the telemetry table's and grows
with the fields new readings bring (first seen type wins); the telemetry output commits that
growth together with the rows that needed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.devices.policy import DevicePolicy
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
from sensorlake.lake.fields import (
    FieldLimits,
    FieldProblem,
    Names,
    collision,
    count_fields,
    normalize_nested,
)
from sensorlake.lake.schema import build_column, infer_type, merge_types
from sensorlake.lake.tables import BASE_COLUMNS, DEAD_LETTER_ARROW, RESERVED, STREAM_FIELD
from sensorlake.stream.feed import NOT_MQTT, Delivery, Drained
from sensorlake.stream.partitions import Partition, Position
from sensorlake.stream.subjects import is_device_subject, topic_for_subject

_TS_TYPE = pa.timestamp("us", tz="UTC")
_RENAMED = RESERVED - {"device_id", "ts"}
_BASE_FOLDS = {name.casefold(): name for name in RESERVED}
_UNIFORM_MIN = 8
_ONLY_DICT = {dict}
_ONLY_STR = {str}
_NUMBERS = {int, float}
_NESTED = (dict, list)


@dataclass
class DeadLetters:
    topics: list[str] = field(default_factory=list)
    device_ids: list[str | None] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    received_us: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)

    def add(
        self, topic: str, device_id: str | None, stream: str, seq: int, received: int,
        reason: str, raw: bytes,
    ) -> None:
        self.topics.append(topic)
        self.device_ids.append(device_id)
        self.streams.append(stream)
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
                pa.array(self.streams, pa.string()),
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
    streams: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    originals: list[bytes | dict[str, Any]] = field(default_factory=list)
    """What the device sent for each reading (message bytes or array item), for dead letters."""
    sources: list[bytes] = field(default_factory=list)
    """The bytes of each reading's message (shared by the items of an array)."""
    dead: DeadLetters = field(default_factory=DeadLetters)
    nbytes: int = 0
    messages: int = 0
    maybe_bools: bool = False
    """Some message's bytes contain `true` or `false` (a cheap, conservative test)."""

    def __len__(self) -> int:
        return len(self.seqs)

    def raw(self, row: int) -> bytes:
        original = self.originals[row]
        return original if isinstance(original, bytes) else item_raw(original, self.sources[row])

    def reject(self, reasons: dict[int, str]) -> None:
        """Move these readings (row → reason) to the dead letters."""
        if not reasons:
            return
        for row in sorted(reasons):
            self.dead.add(self.topics[row], self.device_ids[row], self.streams[row],
                          self.seqs[row], self.received_us[row], reasons[row], self.raw(row))
        keep = [i for i in range(len(self)) if i not in reasons]
        for name in ("topics", "device_ids", "ts_us", "received_us", "streams", "seqs",
                     "payloads", "originals", "sources"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])


@dataclass(frozen=True)
class DecodedBatch:
    """One pull from the stream, decoded once: what every output of the pipeline takes."""

    readings: pa.Table
    """Base columns and the payload's fields, typed by the decoder's schema, in arrival order."""
    dead: pa.Table
    """Dead letters (DEAD_LETTER_ARROW) of the messages and readings that could not be stored."""
    through: Position
    """Per partition, the highest sequence this batch covers — messages that hold no reading
    (MQTT bookkeeping, copies read from elsewhere) included, so positions move past them."""
    nbytes: int

    def __len__(self) -> int:
        return int(self.readings.num_rows)


def item_raw(item: Any, message: bytes) -> bytes:
    """One array item as JSON; the whole message when it nests too deep to serialize."""
    try:
        return orjson.dumps(item)
    except TypeError:
        return message


def after(table: pa.Table, position: Position) -> pa.Table:
    """The rows of `table` (with `stream` and `seq` columns) that `position` does not hold."""
    if not table.num_rows or not position.seqs:
        return table
    keep = None
    for name, seq in position.seqs.items():
        if seq <= 0:
            continue
        held = pc.and_(pc.equal(table[STREAM_FIELD], name), pc.less_equal(table["seq"], seq))
        keep = held if keep is None else pc.or_(keep, held)
    if keep is None:
        return table
    keep = pc.invert(pc.fill_null(keep, False))
    return table if pc.all(keep).as_py() else table.filter(keep)


class Decoder:
    """Turns raw stream messages into DecodedBatches, applying the identity, naming and time
    conventions. One per pipeline session: its schema starts from the table's."""

    _TOPIC_CACHE = 100_000
    """Subjects remembered; a fleet repeats the same few per device, so conversion is rare."""
    _PLAIN_CACHE = 100_000

    def __init__(
        self,
        identity: IdentityRules,
        schema: pa.Schema,
        limits: FieldLimits | None = None,
        policy: DevicePolicy | None = None,
    ) -> None:
        self._identity = identity
        self._limits = limits or FieldLimits()
        self.policy = policy or DevicePolicy()
        if STREAM_FIELD not in schema.names:  # a table of an earlier version
            schema = schema.append(pa.field(STREAM_FIELD, pa.string()))
        self.schema = schema
        self._topics: dict[str, str | None] = {}
        self._names = Names(schema.names)
        self._plain: set[str] = set(schema.names)
        """Keys known to be stored under their own name: most batches bring nothing else."""

    def _topic(self, prefix: str, subject: str) -> str | None:
        """The MQTT topic of a stream subject; None for the MQTT listener's own bookkeeping,
        which a capture of any topic imports along with the readings."""
        topic = self._topics.get(subject, "")
        if topic == "":
            if len(self._topics) >= self._TOPIC_CACHE:
                self._topics.clear()
            topic = (topic_for_subject(prefix, subject)
                     if is_device_subject(prefix, subject) else None)
            self._topics[subject] = topic
        return topic

    def decode(self, parts: Iterable[tuple[Partition, Drained]]) -> DecodedBatch:
        batch = Batch()
        through: dict[str, int] = {}
        identities: dict[str, str] = {}
        for partition, drained in parts:
            if not drained.delivered:
                continue
            identities[partition.name] = partition.identity
            through[partition.name] = max(through.get(partition.name, 0), drained.last_seq)
            prefix = partition.subject_prefix
            for delivery in drained.deliveries:
                topic = self._topic(prefix, delivery.subject)
                if topic is not None:
                    self._add(batch, partition.name, delivery, topic)
        self._normalize(batch)
        table, conflicts = batch_to_arrow(batch, self._evolve(batch))
        for row, reason in conflicts:
            batch.dead.add(batch.topics[row], batch.device_ids[row], batch.streams[row],
                           batch.seqs[row], batch.received_us[row], reason, batch.raw(row))
        return DecodedBatch(table, batch.dead.to_arrow(), Position(through, identities),
                            batch.nbytes)

    def add(self, batch: Batch, partition: Partition, delivery: Delivery) -> None:
        """Decode one message into `batch` (for tests and tools that build batches by hand)."""
        topic = self._topic(partition.subject_prefix, delivery.subject)
        if topic is not None:
            self._add(batch, partition.name, delivery, topic)

    def _add(self, batch: Batch, stream: str, delivery: Delivery, topic: str) -> None:
        data = delivery.data
        seq = delivery.seq
        received_us = delivery.timestamp_ns // 1000
        batch.nbytes += len(data)
        batch.messages += 1
        if not batch.maybe_bools and (b"true" in data or b"false" in data):
            batch.maybe_bools = True
        publisher = self.policy.publisher(topic) if delivery.qos != NOT_MQTT else None
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            batch.dead.add(topic, publisher, stream, seq, received_us, f"invalid JSON: {exc}",
                           data)
            return
        if isinstance(value, dict):
            self._add_reading(batch, value, topic, stream, seq, received_us, data, data,
                              publisher)
        elif isinstance(value, list):
            if not value:
                batch.dead.add(topic, publisher, stream, seq, received_us,
                               "payload is an empty array: it holds no reading", data)
                return
            if publisher is None and self._add_uniform(batch, value, topic, stream, seq,
                                                       received_us, data):
                return
            for item in value:
                if isinstance(item, dict):
                    self._add_reading(batch, item, topic, stream, seq, received_us, None, data,
                                      publisher)
                else:
                    batch.dead.add(topic, publisher, stream, seq, received_us,
                                   "array item is not a JSON object", item_raw(item, data))
        else:
            batch.dead.add(topic, publisher, stream, seq, received_us,
                           "payload is not a JSON object or array", data)

    def _add_uniform(
        self, batch: Batch, items: list[Any], topic: str, stream: str, seq: int,
        received_us: int, message: bytes,
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
        batch.streams.extend([stream] * n)
        batch.seqs.extend([seq] * n)
        batch.payloads.extend(items)
        batch.originals.extend(items)
        batch.sources.extend([message] * n)
        return True

    def _add_reading(
        self,
        batch: Batch,
        payload: dict[str, Any],
        topic: str,
        stream: str,
        seq: int,
        received_us: int,
        raw: bytes | None,
        message: bytes,
        publisher: str | None,
    ) -> None:
        """`raw` is the message's bytes when the reading is the whole message, None for an
        item of an array message."""
        original: bytes | dict[str, Any] = raw if raw is not None else payload
        if publisher is None:
            device_id = self._identity.device_id(payload, topic)
        else:
            # An authenticated device: its readings are its own unless it is a gateway.
            named = self._identity.named_device(payload)
            device_id = publisher if named is None else named
            refusal = self.policy.refusal(publisher, device_id)
            if refusal is not None:
                batch.dead.add(topic, publisher, stream, seq, received_us, refusal,
                               raw if raw is not None else item_raw(payload, message))
                return
        try:
            ts = self._identity.event_time_us(payload, received_us)
        except TimeValueError as exc:
            batch.dead.add(
                topic, device_id, stream, seq, received_us, f"field 'ts': {exc}",
                raw if raw is not None else item_raw(payload, message),
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
        batch.streams.append(stream)
        batch.seqs.append(seq)
        batch.payloads.append(payload)
        batch.originals.append(original)
        batch.sources.append(message)

    def _normalize(self, batch: Batch) -> None:
        """Apply the naming rules and size limits of `fields.py`; readings that break them
        become dead letters. Cheap unless a batch brings keys never seen before."""
        if not batch.payloads:
            return
        limits = self._limits
        refused: dict[int, str] = {}
        keys = dict.fromkeys(chain.from_iterable(batch.payloads))
        # A plain key may still be new to the table (its first reading was refused for another
        # reason): its value has not been looked into yet, so it takes the long way.
        columns = set(self.schema.names)
        if all(key in self._plain and key in columns for key in keys) and not any(
                _nested(f.type) for f in self.schema):
            if max(map(len, batch.payloads)) > limits.max_keys:
                batch.reject({row: _too_many(len(p), limits)
                              for row, p in enumerate(batch.payloads) if len(p) > limits.max_keys})
            return  # nothing new, nothing nested: the common case
        renames: dict[str, str] = {}
        bad: dict[str, str] = {}
        for key in keys:
            if key in self._plain:
                continue
            try:
                name = self._names.resolve(key)
            except FieldProblem as exc:
                bad[key] = str(exc)
                continue
            base = _BASE_FOLDS.get(name.casefold())
            if base is not None and key not in ("device_id", "ts"):
                name = f"payload_{key}"  # a reserved name in another case
            self._names.add(name)
            if name == key:
                if len(self._plain) >= self._PLAIN_CACHE:
                    self._plain = set(self.schema.names)
                self._plain.add(key)
            else:
                renames[key] = name
        if renames or bad:
            touched = renames.keys() | bad.keys()
            for row, payload in enumerate(batch.payloads):
                if touched.isdisjoint(payload):
                    continue
                try:
                    batch.payloads[row] = _renamed(payload, renames, bad)
                except FieldProblem as exc:
                    refused[row] = str(exc)
        if max(map(len, batch.payloads)) > limits.max_keys:
            for row, payload in enumerate(batch.payloads):
                if len(payload) > limits.max_keys:
                    refused.setdefault(row, _too_many(len(payload), limits))
        # Objects and arrays are looked into where they can be: columns that are nested, and
        # fields the table does not have yet (their type is still to be found).
        types = {f.name: f.type for f in self.schema}
        nested_names = {name for name, typ in types.items() if _nested(typ)}
        nested_names.update(n for n in (renames.get(k, k) for k in keys if k not in bad)
                            if n not in types)
        for row, payload in enumerate(batch.payloads if nested_names else ()):
            if row in refused or nested_names.isdisjoint(payload):
                continue
            counted = len(payload)
            for name in nested_names.intersection(payload):
                value = payload[name]
                if not isinstance(value, _NESTED):
                    continue
                try:
                    new, n = normalize_nested(value, types.get(name), limits)
                except FieldProblem as exc:
                    refused[row] = str(exc)
                    break
                counted += n
                if new is not value:
                    payload = batch.payloads[row] = {**payload, name: new}
            if row not in refused and counted > limits.max_keys:
                refused[row] = _too_many(counted, limits)
        batch.reject(refused)

    def _evolve(self, batch: Batch) -> pa.Schema:
        """The decoder's schema grown by this batch's new fields, within `lake.max_columns`;
        readings that would grow it past that become dead letters."""
        evolved = evolve_schema(batch.payloads, self.schema)
        limit = self._limits.max_columns
        if evolved is not self.schema and count_fields(evolved) > limit:
            running = self.schema
            refused: dict[int, str] = {}
            for row, payload in enumerate(batch.payloads):
                grown = evolve_schema([payload], running)
                if grown is not running and count_fields(grown) > limit:
                    refused[row] = (f"the table would have more than {limit} columns "
                                    "(lake.max_columns); the reading brings new fields")
                else:
                    running = grown
            batch.reject(refused)
            evolved = evolve_schema(batch.payloads, self.schema)
        self.schema = evolved
        return evolved


def _renamed(payload: dict[str, Any], renames: dict[str, str], bad: dict[str, str]
             ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, value in payload.items():
        if key in bad:
            raise FieldProblem(bad[key])
        name = renames.get(key, key)
        if name in out:
            raise FieldProblem(collision(source[name], key, name))
        out[name] = value
        source[name] = key
    return out


def _too_many(count: int, limits: FieldLimits) -> str:
    return f"the reading has {count} fields, more than {limits.max_keys} (ingest.max_keys)"


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


def evolve_schema(payloads: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Schema:
    """`schema` plus the columns and struct fields these payloads bring; unchanged if none."""
    known = set(schema.names)
    # Every payload's keys in first-seen order (so new columns keep the payload's order),
    # gathered in C: iterating a dict yields its keys.
    new_keys = [k for k in dict.fromkeys(chain.from_iterable(payloads)) if k not in known]
    nested = [f for f in schema if f.name not in BASE_COLUMNS and _nested(f.type)]
    if not new_keys and not nested:
        return schema
    fields = {f.name: f for f in schema}
    for name in [*new_keys, *(f.name for f in nested)]:
        typ = fields[name].type if name in fields else None
        values = [p.get(name) for p in payloads]
        # A scalar's type follows from its Python type alone; only objects and arrays need a
        # look inside, value by value, for the fields they may add.
        for kind in dict.fromkeys(map(type, values)):  # first seen first: it wins conflicts
            if kind is dict or kind is list:
                # One inference per distinct shape: a fleet sends the same few thousands of
                # times, and building Arrow types value by value was a fifth of the worker.
                shapes: dict[Any, Any] = {}
                for value in values:
                    if type(value) is kind:
                        shapes.setdefault(_shape(value), value)
                for value in shapes.values():
                    typ = merge_types(typ, infer_type(value))
            elif kind is not type(None):
                typ = merge_types(typ, infer_type(next(v for v in values if type(v) is kind)))
        if typ is None:
            continue
        fields[name] = fields[name].with_type(typ) if name in fields else pa.field(name, typ)
    evolved = pa.schema(list(fields.values()), metadata=schema.metadata)
    return schema if evolved.equals(schema) else evolved


def _shape(value: Any) -> Any:
    """What infer_type's answer depends on: the Python types, key order and all (numbers are
    one type there)."""
    kind = type(value)
    if kind is dict:
        return (dict, tuple((key, _shape(item)) for key, item in value.items()))
    if kind is list:
        return (list, tuple(dict.fromkeys(_shape(item) for item in value)))
    return float if kind is int else kind


def _nested(typ: pa.DataType) -> bool:
    return bool(pa.types.is_struct(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ))


def batch_to_arrow(batch: Batch, schema: pa.Schema) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The batch as a table of exactly `schema` (missing fields null), in arrival order; plus
    (row, reason) for readings that conflict with the schema — those rows are left out of the
    table and belong in the dead-letter table."""
    conflicts: dict[int, str] = {}
    arrays: list[pa.Array] = []
    base: dict[str, list[Any]] = {
        "topic": batch.topics,
        "device_id": batch.device_ids,
        "ts": batch.ts_us,
        "received_at": batch.received_us,
        "seq": batch.seqs,
        STREAM_FIELD: batch.streams,
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
    return table, sorted(conflicts.items())


def _payload_columns_fast(batch: Batch, fields: list[pa.Field]) -> dict[str, pa.Array] | None:
    """Every payload column in one C++ conversion, or None when that cannot be trusted.

    Arrow refuses strings where numbers are due (numeric strings, conflicts) — then the
    per-column path sorts them out. It would silently read booleans as numbers, so batches
    whose raw bytes hold `true`/`false` anywhere take the per-column path too. Unknown keys
    cannot be dropped silently: the schema already holds every key of this batch.
    """
    if batch.maybe_bools or not fields or not batch.payloads:
        return None
    try:
        struct = pa.array(batch.payloads, type=pa.struct(fields))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return None
    return {f.name: struct.field(i) for i, f in enumerate(fields)}
