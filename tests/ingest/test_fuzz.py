"""Fuzz sensorlake end to end: throw garbage at it over MQTT and HTTP, and it survives.

What this test proves, on a real `sensorlake up` (its own nats-server, lake.flush_interval 1 s):

1. It keeps working. After more than 10,000 bad or odd inputs (the families below, generated
   from a fixed seed, about half over MQTT and half over HTTP), one valid reading sent over MQTT
   and one over HTTP are *committed* to `telemetry` within COMMIT_BOUND; `sensorlake up` is
   still running, /healthz answers 200, no supervised process was restarted, and the log holds
   no Python traceback.
2. Nothing that was PUBACKed is lost. Every MQTT message the broker acknowledged (QoS 1) is a
   stream message that produced a `telemetry` row or a `dead_letter` row: distinct stream
   messages (stream, seq) over both tables equal the messages published, family by family.
3. HTTP stores what it accepted, and only that. The readings the API reported as `accepted`
   are exactly the `telemetry` rows plus the `dead_letter` rows of the HTTP topics, family by
   family; the readings it reported as `rejected` went back to the sender and are stored nowhere.
4. Every dead letter says why: `reason` is never empty.

Each family goes to a topic of its own under a root no other test uses (`fz-<id>/m-<family>/t`
over MQTT, `fz-<id>/h-<family>/t` over HTTP), and inputs that are JSON objects carry
`"fam": "<family>#<n>"`, so a failure names the family, its dead-letter reasons and a few of the
inputs that went missing. Families are sent in the order they are defined: when the writer
stops at some input, the first short family is where it stopped.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest

from tests.conftest import Sensorlake

SEED = 20_260_311
FLUSH_INTERVAL = 1.0
COMMIT_BOUND = 15 * FLUSH_INTERVAL
"""Seconds the valid readings may take to be committed behind the fuzz backlog."""
MIN_INPUTS = 10_000
MQTT_ACK_TIMEOUT = 60.0
HTTP_BATCH_ITEMS = 250
HTTP_BATCH_BYTES = 4 * 1024 * 1024
EXAMPLE_FAMILIES = 4
"""Families (per channel) whose missing inputs a failure shows."""
HTTP_SINGLES = 10
"""The first few inputs of each family are sent as a whole body each (the single-object path
keeps the raw bytes); JSON arrays always are (as NDJSON lines they would only be refused)."""

# --------------------------------------------------------------------------------------------
# JSON text, written by hand where a JSON library would refuse or normalise the input.

Tag = Callable[[int], bytes]
"""The `"fam":"<family>#<n>"` member for input n of a family."""

TAG_RE = re.compile(rb'"fam":"([a-z0-9_]+#[0-9]+)"')


def js(value: Any) -> bytes:
    """JSON text of a value; integers beyond 64 bits written out (orjson would refuse them)."""
    if isinstance(value, int) and not isinstance(value, bool) and not (
            -(2**63) <= value < 2**64):
        return str(value).encode()
    return orjson.dumps(value)


def kv(key: str, value: Any) -> bytes:
    return js(key) + b":" + js(value)


def obj(*members: bytes) -> bytes:
    return b"{" + b",".join(members) + b"}"


def text(rng: random.Random, size: int) -> str:
    chunk = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789 ", k=1024))
    return (chunk * (size // len(chunk) + 1))[:size]


# --------------------------------------------------------------------------------------------
# The families. Each returns its inputs (payload bytes); its name is its function's name.

FAMILIES: list[Callable[[random.Random, Tag], list[bytes]]] = []


def family(fn: Callable[[random.Random, Tag], list[bytes]]
           ) -> Callable[[random.Random, Tag], list[bytes]]:
    FAMILIES.append(fn)
    return fn


@family
def random_bytes(rng: random.Random, tag: Tag) -> list[bytes]:
    prefixes = (b"", b"", b"{", b'{"', b"[", b'{"fam":')
    return [rng.choice(prefixes) + rng.randbytes(rng.choice((1, 2, 3, 8, 32, 100, 500, 4000)))
            for _ in range(600)]


BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc",
            b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82")
LONE_SURROGATES = (b"\\ud800", b"\\udfff", b"\\ud83d", b"\\udc00\\ud800")


@family
def invalid_utf8(rng: random.Random, tag: Tag) -> list[bytes]:
    out = []
    for i in range(300):
        bad = rng.choice(BAD_UTF8)
        shape = i % 6
        if shape == 0:
            out.append(obj(tag(i), b'"u8v":"abc' + bad + b'def"'))
        elif shape == 1:
            out.append(obj(tag(i), b'"u8k' + bad + b'":1'))
        elif shape == 2:
            out.append(obj(tag(i), b'"u8v":"' + rng.choice(LONE_SURROGATES) + b'"'))
        elif shape == 3:
            out.append(obj(tag(i), '"u8v":"Müller 25°C"'.encode("latin-1")))
        elif shape == 4:
            out.append(obj(tag(i), kv("u8v", "x")).decode().encode(rng.choice(("utf-16",
                                                                               "utf-32"))))
        else:
            out.append(rng.choice((b"\xef\xbb\xbf" + obj(tag(i), kv("u8v", "bom")),
                                   obj(tag(i), b'"u8n":1' + bad))))
    return out


@family
def truncated_json(rng: random.Random, tag: Tag) -> list[bytes]:
    broken = (b'{fam:1}', b"{'tv': 1}", b'{"tv":1,}', b'{"tv":1 /* c */}', b'{"tv" 1}',
              b'{"tv":}', b'{"tv":1}}', b"{{}}", b'{"tv":[1,2}', b'{"tv":"open}')
    out = []
    for i in range(600):
        whole = obj(tag(i), kv("tv", rng.random()), kv("tl", [1, "two", {"three": 3}]),
                    kv("to", {"a": {"b": "xyz"}}))
        shape = i % 6
        if shape <= 2:
            out.append(whole[: rng.randrange(1, len(whole))])
        elif shape == 3:  # trailing garbage
            out.append(whole + rng.choice((b"}", b"]", b",", b" x", b"{", b"\x00")))
        elif shape == 4:  # two values in one payload (with "\n" it is NDJSON over HTTP)
            out.append(whole + rng.choice((b"", b" ", b"\n")) + obj(tag(i), kv("tv", 2.0)))
        else:
            out.append(broken[i % len(broken)])
    return out


DEPTHS = (64, 128, 255, 256, 500, 900, 998, 999, 1000, 1022, 1023, 1024, 1025, 2000, 5000, 20000)


@family
def deep_nesting(rng: random.Random, tag: Tag) -> list[bytes]:
    out = []
    for i, (depth, kind) in enumerate(itertools.product(DEPTHS, ("object", "array", "mixed",
                                                                   "bare"))):
        if kind == "object":
            chain = b'{"d":' * depth + b"1" + b"}" * depth
        elif kind == "array":
            chain = b"[" * depth + b"1" + b"]" * depth
        else:
            chain = b'{"d":[' * (depth // 2) + b'"x"' + b"]}" * (depth // 2)
        out.append(chain if kind == "bare" else obj(tag(i), b'"d":' + chain))
    return out


HUGE_NUMBERS = (b"18446744073709551616", b"18446744073709551615", b"9223372036854775808",
                b"-9223372036854775808", b"-9223372036854775809", b"1e400", b"-1e400",
                b"1e-400", b"1.7976931348623157e309", b"4.9e-325", b"1E+999999999",
                b"123456789012345678901234567890.5e10", b"-0", b"-0.0", b"0e0",
                b"9" * 5000, b"1" + b"0" * 400)


@family
def huge_numbers(rng: random.Random, tag: Tag) -> list[bytes]:
    out = []
    for i in range(400):
        if i < len(HUGE_NUMBERS):
            raw = HUGE_NUMBERS[i]
        elif i % 2:
            raw = js(rng.choice((1, -1)) * rng.getrandbits(rng.randrange(65, 1400)))
        else:
            raw = b"%de%d" % (rng.randint(1, 9), rng.choice((309, 400, 1000, -400, 99999)))
        shape = i % 4
        if shape == 0:
            out.append(obj(tag(i), b'"big":' + raw))
        elif shape == 1:
            out.append(obj(tag(i), b'"bigo":{"v":' + raw + b"}"))
        elif shape == 2:
            out.append(obj(tag(i), b'"bigl":[1,' + raw + b"]"))
        else:
            out.append(raw)
    return out


NAN_LITERALS = (b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"+Infinity", b"nan", b"inf",
                b"-inf", b"Inf", b"NAN", b"undefined", b"None", b"True", b"False", b"+1",
                b".5", b"01", b"1.", b"0x1F", b"1_000", b'"NaN"', b'"Infinity"', b'"-inf"')


@family
def nan_infinity(rng: random.Random, tag: Tag) -> list[bytes]:
    out = []
    for i in range(240):
        lit = NAN_LITERALS[i % len(NAN_LITERALS)]
        shape = (i // len(NAN_LITERALS)) % 4
        if shape == 0:
            out.append(obj(tag(i), b'"nv":' + lit))
        elif shape == 1:
            out.append(obj(tag(i), b'"na":[1,' + lit + b"]"))
        elif shape == 2:
            out.append(lit)
        else:
            out.append(obj(tag(i), b'"no":{"x":' + lit + b"}"))
    return out


@family
def duplicate_keys(rng: random.Random, tag: Tag) -> list[bytes]:
    shapes: list[Callable[[int], bytes]] = [
        lambda i: obj(tag(i), kv("dup", 1), kv("dup", 2)),
        lambda i: obj(tag(i), kv("dup", 1), kv("dup", "one")),
        lambda i: obj(tag(i), kv("dup", {"a": 1}), kv("dup", [1])),
        lambda i: obj(tag(i), b'"dupo":{"y":1,"y":{"z":2}}'),
        lambda i: obj(tag(i), *[kv("dupm", k) for k in range(100)]),
        lambda i: obj(tag(i), kv("ts", 1_700_000_000), kv("ts", "yesterday")),
        lambda i: obj(tag(i), kv("device_id", "d1"), kv("device_id", {})),
        lambda i: obj(tag(i), kv("dup", None), kv("dup", 3)),
        lambda i: obj(tag(i), kv("dup", 1), kv("DUP", 2), kv("dup", 3)),
    ]
    return [shapes[i % len(shapes)](i) for i in range(300)]


FLIPS: tuple[Any, ...] = (1.5, "a string", {"x": 1}, [1, 2], True, None, "42", 0, {"x": "y"},
                          [], ["a"], False, {"x": {"deeper": 1}}, [{"x": 1}], 2**53)
"""number → string → object → array → bool → … for the same field across readings."""


@family
def type_flips(rng: random.Random, tag: Tag) -> list[bytes]:
    out = []
    for i in range(600):
        members = [tag(i), kv("flip", FLIPS[i % len(FLIPS)] if i < 300 else rng.choice(FLIPS))]
        if i % 3 == 0:
            members.append(kv("flip_nested", {"v": rng.choice(FLIPS)}))
        if i % 5 == 0:  # arrays whose items are of different types
            members.append(kv("flip_list", [rng.choice(FLIPS) for _ in range(3)]))
        out.append(obj(*members))
    return out


@family
def giant_strings(rng: random.Random, tag: Tag) -> list[bytes]:
    """About 2.9 MB per channel: a few large strings, not a flood."""
    out = [obj(tag(i), kv("giant", text(rng, size)))
           for i, size in enumerate((1_000_000, 600_000, 300_000, 100_000, 30_000, 10_000))]
    out.append(obj(tag(10), kv("giant", "🌡" * 50_000)))
    out.append(obj(tag(11), b'"giant":"' + b"\\n\\u0000" * 20_000 + b'"'))
    out.append(js(text(rng, 200_000)))  # a giant JSON string as the whole payload
    out.append(obj(tag(12), *[kv(f"giant_{k}", text(rng, 10_000)) for k in range(20)]))
    return out


@family
def key_explosion(rng: random.Random, tag: Tag) -> list[bytes]:
    # The same names on both channels: 5,000 columns, not 10,000.
    return [
        obj(tag(0), *[kv(f"kx{k:04d}", k) for k in range(5000)]),
        obj(tag(1), kv("kx_nest", {f"n{k:04d}": k for k in range(2000)})),
        obj(tag(2), kv("kx_list", [{f"e{k}": k} for k in range(500)])),
    ]


EMPTY_KEYS = (b'"":1', b'"":"x"', b'"":{"":1}', b'"ek":{"":2}', b'"":[1,2]', b'"":null',
              b'" ":1', b'"\\t":1', b'"ek2":[{"":1}]')


@family
def empty_key(rng: random.Random, tag: Tag) -> list[bytes]:
    return [obj(tag(i), EMPTY_KEYS[i % len(EMPTY_KEYS)]) for i in range(100)]


DOTTED = (b'"a.b":1,"a":{"b":2}', b'"dk":{"b":2},"dk.b":1', b'"dx.y.z":1', b'".":1', b'"dk.":1',
          b'".dk":1', b'"..":1', b'"dk..b":1', b'"dk.b":{"c.d":1}', b'"dn":{"a.b":1,"a":{"b":2}}',
          b'"dk/b":1', b'"dk[0]":1', b'"dk\\"q":1', b'"dk b":1')


@family
def dotted_keys(rng: random.Random, tag: Tag) -> list[bytes]:
    return [obj(tag(i), DOTTED[i % len(DOTTED)]) for i in range(150)]


CASES: tuple[tuple[tuple[str, Any], ...], ...] = (
    (("TEMP", 1), ("temp", 2)), (("Temp", 3),), (("tEmP", "x"),), (("temp", 4),),
    (("TEMP", {"a": 1}),), (("Äpfel", 1), ("äpfel", 2)), (("straße", 1), ("STRASSE", 2)),
    (("ǅ", 1), ("ǆ", 1), ("Ǆ", 1)), (("\u212a", 1), ("k", 2), ("K", 3)),
    (("İ", 1), ("i̇", 2), ("I", 3)), (("Nest", {"Val": 1, "val": 2}),),
)


@family
def case_keys(rng: random.Random, tag: Tag) -> list[bytes]:
    return [obj(tag(i), *[kv(k, v) for k, v in CASES[i % len(CASES)]]) for i in range(200)]


UNICODE = ("温度", "température", "🌡️", "👨‍👩‍👧", "\u200b", "\u202eevil", "\u0000", "\u0001",
           "\u001f", "\x7f", "\ufeff", "\uffff", "\ufffd", "a\u0301", "😀", "𝔘𝔫𝔦", "\U0010ffff",
           "\n", "\t", "\\", '"', "'", "`", "<script>", "%s%n", "NUL\u0000inside", " ")


@family
def unicode_keys(rng: random.Random, tag: Tag) -> list[bytes]:
    out = []
    for i in range(400):
        key = rng.choice(UNICODE) + (rng.choice(UNICODE) if rng.random() < 0.2 else "")
        value = "".join(rng.choices(UNICODE, k=rng.randint(1, 5)))
        if i % 10 == 9:  # raw control characters inside a string: not JSON
            out.append(obj(tag(i), b'"uv":"a' + rng.choice((b"\x01", b"\n", b"\x00", b"\x1f"))
                           + b'b"'))
        elif i % 2:  # as UTF-8
            out.append(obj(tag(i), kv(key, value)))
        else:  # as \u escapes (emoji as surrogate pairs)
            out.append(obj(tag(i), (json.dumps(key) + ":" + json.dumps(value)).encode()))
    return out


LEADING = ("1", "2abc", "007", "1e5", "-1", "0x1F", "3.14", " 1", "١٢٣", "1 2", "9" * 50, "0",
           "+1", "1_000")


@family
def leading_digit_keys(rng: random.Random, tag: Tag) -> list[bytes]:
    return [obj(tag(i), *[kv(k, rng.choice((1, 2.5, "x"))) for k in rng.sample(LEADING, 3)])
            for i in range(150)]


LONG_KEYS = ("L" * 10_000, "é" * 10_000, "🌡" * 2_500, "k" * 256, "m" * 1_000, "long" * 2_500)


@family
def long_keys(rng: random.Random, tag: Tag) -> list[bytes]:
    out = []
    for i in range(24):
        key = LONG_KEYS[i % len(LONG_KEYS)]
        shape = (i // len(LONG_KEYS)) % 4
        if shape == 0:
            out.append(obj(tag(i), kv(key, i)))
        elif shape == 1:
            out.append(obj(tag(i), kv("lk", {key: i})))
        elif shape == 2:
            out.append(obj(tag(i), kv(key[:5000] + "." + key[:5000], i)))
        else:
            out.append(obj(tag(i), kv(key, "v" * 10_000)))
    return out


RESERVED_KEYS = ("ts", "timestamp", "time", "device_id", "deviceId", "device", "thing", "seq",
                 "topic", "received_at", "stream", "payload_seq", "payload_topic", "ts_day")
ODD_VALUES: tuple[Any, ...] = (
    "yesterday", -1, 1e30, -1e30, 0, "", None, True, False, {}, [], [1, 2], {"a": 1},
    "2026-13-45T99:00:00Z", "1e400", 2**70, 1.5, "NaN", "2026-01-01T00:00:00+25:00",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "x" * 300, "../../etc/passwd",
    "'; DROP TABLE telemetry; --", "2026-03-01", 1_700_000_000, 1_700_000_000_000,
    1_700_000_000_000_000, 1_700_000_000_000_000_000, "1700000000", " 2026-03-01T12:00:00Z ",
    "\u0000",
)
NAMED_ODDITIES: tuple[tuple[str, Any], ...] = (
    ("ts", "yesterday"), ("ts", -1), ("ts", 1e30), ("device_id", {}), ("seq", "abc"),
    ("topic", {"x": 1}), ("received_at", "now"), ("device_id", ""), ("ts", None),
    ("seq", -5), ("topic", "other/topic"), ("stream", {}),
)


@family
def reserved_names(rng: random.Random, tag: Tag) -> list[bytes]:
    out = [obj(tag(i), kv(k, v)) for i, (k, v) in enumerate(NAMED_ODDITIES)]
    n = itertools.count(len(out))
    for _ in range(400 - len(out)):
        pairs = {rng.choice(RESERVED_KEYS): rng.choice(ODD_VALUES)
                 for _ in range(rng.randint(1, 3))}
        out.append(obj(tag(next(n)), *[kv(k, v) for k, v in pairs.items()]))
    # Arrays of eight or more objects, the shape the writer decodes column-wise at once.
    for values in ([-1] * 8, [1_700_000_000 + k for k in range(9)] + ["yesterday"],
                   [1e30] * 10, [1_700_000_000.5] * 7 + [None]):
        out.append(b"[" + b",".join(obj(tag(next(n)), kv("ts", v), kv("rv", 1))
                                    for v in values) + b"]")
    out.append(b"[" + b",".join(obj(tag(next(n)), kv("device_id", {})) for _ in range(8)) + b"]")
    out.append(b"[" + b",".join(obj(tag(next(n)), kv("seq", k)) for k in range(8)) + b"]")
    out.append(b"[" + b",".join(obj(tag(next(n)), kv("device_id", "")) for _ in range(8)) + b"]")
    return out


SCALARS = (b"0", b"-1", b"1.5", b"1e308", b'"a string"', b'""', b"null", b"true", b"false",
           b'"\\u0000"', b"  42  ", b'"{\\"looks\\": \\"like json\\"}"')


@family
def not_object(rng: random.Random, tag: Tag) -> list[bytes]:
    n = itertools.count()
    out = []
    for i in range(600):
        shape = i % 6
        if shape <= 1:
            out.append(SCALARS[i % len(SCALARS)])
        elif shape == 2:  # mixed items
            items = [b"1", obj(tag(next(n)), kv("nov", 1)), b'"x"', b"null", b"[[]]", b"true",
                     b"{}"]
            out.append(b"[" + b",".join(rng.sample(items, rng.randint(1, len(items)))) + b"]")
        elif shape == 3:  # eight or more alike objects
            out.append(b"[" + b",".join(obj(tag(next(n)), kv("nov", k))
                                        for k in range(rng.randint(8, 20))) + b"]")
        elif shape == 4:  # almost alike: one odd item
            items = [obj(tag(next(n)), kv("nov", k)) for k in range(rng.randint(8, 12))]
            items[rng.randrange(len(items))] = rng.choice((b"7", b'"s"', b"null", b"[]",
                                                           obj(tag(next(n)), kv("seq", 1))))
            out.append(b"[" + b",".join(items) + b"]")
        else:  # arrays of arrays, long arrays
            out.append(rng.choice((b"[[" + obj(tag(next(n)), kv("nov", 1)) + b"]]",
                                   b"[[1,2],[3]]", js(list(range(1000))), b"[[],[[]]]")))
    return out


@family
def empty_array(rng: random.Random, tag: Tag) -> list[bytes]:
    shapes = (b"[]", b"[ ]", b" []", b"[]\n", b"[\n]", b"\t[]\t")
    return [shapes[i % len(shapes)] for i in range(60)]


@family
def empty_payload(rng: random.Random, tag: Tag) -> list[bytes]:
    shapes = (b"", b" ", b"\n", b"\r\n", b"\t", b"\x00", b"\x00" * 16, b"\xef\xbb\xbf", b"{}",
              b" {} ", b"[{}]", b"{ }")
    return [shapes[i % len(shapes)] for i in range(100)]


def generate(rng: random.Random) -> dict[str, list[bytes]]:
    """Every family's inputs, in send order."""
    inputs = {}
    for fn in FAMILIES:
        name = fn.__name__
        inputs[name] = fn(rng, lambda i, name=name: b'"fam":"%s#%d"' % (name.encode(), i))
    return inputs


# --------------------------------------------------------------------------------------------
# Sending.


def mqtt_send(port: int, messages: list[tuple[str, str, bytes]]
              ) -> tuple[Counter[str], list[str]]:
    """Publish (family, topic, payload) at QoS 1; PUBACKs per family, and what went wrong."""
    acked: Counter[str] = Counter()
    problems: list[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"fuzz-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        pending = [(fam, payload, client.publish(topic, payload, qos=1))
                   for fam, topic, payload in messages]
        deadline = time.monotonic() + MQTT_ACK_TIMEOUT
        unacked: dict[str, list[bytes]] = {}
        for fam, payload, info in pending:
            try:
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                problems.append(f"MQTT publish failed ({fam}): {exc}")
            if info.is_published():
                acked[fam] += 1
            else:
                unacked.setdefault(fam, []).append(payload)
        for fam, payloads in unacked.items():
            problems.append(f"MQTT: {len(payloads)} {fam} message(s) got no PUBACK within "
                            f"{MQTT_ACK_TIMEOUT:.0f} s, e.g. {show(payloads[0])}")
    finally:
        client.disconnect()
        client.loop_stop()
    return acked, problems


def http_bodies(items: list[bytes]) -> Iterator[tuple[str, bytes, int]]:
    """(content type, body, inputs in it): some inputs alone, the rest in batches that take
    turns as NDJSON, a JSON array (when every item parses) and NDJSON sent as JSON."""
    singles = [x for j, x in enumerate(items) if j < HTTP_SINGLES or x.lstrip().startswith(b"[")]
    rest = [x for j, x in enumerate(items)
            if not (j < HTTP_SINGLES or x.lstrip().startswith(b"["))]
    for x in singles:
        yield "application/json", x, 1
    chunk: list[bytes] = []
    size = 0
    turn = itertools.cycle(("ndjson", "array", "ndjson-as-json"))
    for x in [*rest, None]:
        if chunk and (x is None or len(chunk) >= HTTP_BATCH_ITEMS
                      or size + len(x) > HTTP_BATCH_BYTES):
            mode = next(turn)
            if mode == "array" and all(parses(c) for c in chunk):
                yield "application/json", b"[" + b",".join(chunk) + b"]", len(chunk)
            else:
                yield ("application/x-ndjson" if mode != "ndjson-as-json" else
                       "application/json"), b"\n".join(chunk), len(chunk)
            chunk, size = [], 0
        if x is not None:
            chunk.append(x)
            size += len(x) + 1


@dataclass
class HttpTally:
    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    refused_bodies: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    problems: list[str] = field(default_factory=list)


def http_send(url: str, topics: dict[str, str], inputs: dict[str, list[bytes]]) -> HttpTally:
    tally = HttpTally()
    with httpx.Client(base_url=url, timeout=60) as client:
        for fam, items in inputs.items():
            for content_type, body, _ in http_bodies(items):
                tally.requests += 1
                try:
                    response = client.post("/api/v1/ingest", params={"topic": topics[fam]},
                                           content=body, headers={"Content-Type": content_type})
                except httpx.HTTPError as exc:
                    tally.problems.append(f"HTTP ingest of {fam} failed ({len(body)} bytes, "
                                          f"{content_type}): {type(exc).__name__}: {exc}")
                    return tally  # the server is gone: the checks below will say so
                try:
                    result = response.json()
                except ValueError:
                    result = None
                if response.status_code in (200, 400, 413) and isinstance(result, dict):
                    tally.accepted[fam] += int(result.get("accepted", 0))
                    tally.rejected[fam] += len(result.get("rejected", []))
                    tally.refused_bodies[fam] += "error" in result
                else:
                    tally.problems.append(
                        f"HTTP ingest of {fam} answered {response.status_code} "
                        f"({len(body)} bytes, {content_type}, e.g. {show(body)}): "
                        f"{response.text[:300]}")
    return tally


# --------------------------------------------------------------------------------------------
# Reading the lake back.


def sql(lake: Sensorlake, query: str) -> tuple[dict[str, Any] | None, str | None]:
    """The query's result, or why there is none (the API's answer, or that nobody answered)."""
    try:
        response = httpx.post(f"{lake.url}/api/v1/query",
                              json={"sql": query, "max_rows": 100_000}, timeout=60)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return None, f"HTTP {response.status_code}: {response.text[:400]}"
    result: dict[str, Any] = response.json()
    if result.get("truncated"):
        return None, f"result truncated at {len(result['rows'])} rows: {query[:120]}"
    return result, None


def columns(lake: Sensorlake, table: str) -> set[str]:
    try:
        response = httpx.get(f"{lake.url}/api/v1/tables/{table}", timeout=30)
        return {c["name"] for c in response.json()["columns"]}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return set()


def parses(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def is_object(data: bytes) -> bool:
    try:
        return isinstance(orjson.loads(data), dict)
    except orjson.JSONDecodeError:
        return False


def raw_bytes(value: Any) -> bytes:
    """`raw` as the query API returns it: text, or base64 for bytes that are not UTF-8."""
    if isinstance(value, str) and value.startswith("base64:"):
        return base64.b64decode(value[7:])
    return value.encode() if isinstance(value, str) else b""


def show(data: bytes, limit: int = 90) -> str:
    return repr(data[:limit]) + (f"…({len(data):,} bytes)" if len(data) > limit else "")


def family_of(topic: str) -> str:
    return topic.split("/")[1][2:]


def found_tags(lake: Sensorlake, topic: str) -> set[bytes]:
    """Tags of the inputs of `topic` that made it to either table."""
    tags: set[bytes] = set()
    result, _ = sql(lake, f"SELECT fam FROM telemetry WHERE topic = '{topic}'")
    for (value,) in result["rows"] if result else []:
        if isinstance(value, str):
            tags.add(value.encode())
    result, _ = sql(lake, f"SELECT raw FROM dead_letter WHERE topic = '{topic}'")
    for (value,) in result["rows"] if result else []:
        tags.update(TAG_RE.findall(raw_bytes(value)))
    return tags


def expected_tags(data: bytes, http: bool) -> set[bytes]:
    """Tags of the readings in an input that should reach a table: over MQTT every tag (a
    dead letter keeps the raw bytes); over HTTP only objects the API accepts (an object body
    or line, or an object item of an array body)."""
    if not http:
        return set(TAG_RE.findall(data))
    tags = set()
    for part in [data] if parses(data) else data.split(b"\n"):  # NDJSON in a body or a line
        try:
            value = orjson.loads(part)
        except orjson.JSONDecodeError:
            continue
        items = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
        tags |= {i["fam"].encode() for i in items
                 if isinstance(i, dict) and isinstance(i.get("fam"), str)}
    return tags


def missing_examples(lake: Sensorlake, topic: str, items: list[bytes], http: bool) -> str:
    found = found_tags(lake, topic)
    missing = [x for x in items if not expected_tags(x, http) <= found]
    if missing:
        return f"; {len(missing)} tagged input(s) missing, e.g. " + ", ".join(
            show(x, 70) for x in missing[:3])
    untagged = [x for x in items if not TAG_RE.search(x)]
    if not untagged:
        return ""
    where = ("untagged inputs" if len(untagged) == len(items) else
             f"every tagged input is there: the missing are among the {len(untagged)} untagged")
    return f"; {where}, e.g. " + ", ".join(show(x, 50) for x in untagged[:3])


def shortfalls(lake: Sensorlake, channel: str, inputs: dict[str, list[bytes]],
               topics: dict[str, str], expected: Counter[str], got: dict[str, str],
               short: Callable[[str], bool]) -> list[str]:
    """One line per family whose counts differ, in send order; examples of missing inputs for
    the first few (after the writer stops, the later families are short only because of it)."""
    lines = []
    for fam in inputs:
        if not short(fam):
            continue
        line = f"      {fam:<20} {channel} {expected[fam]:>5}, {got[fam]}"
        if len(lines) < EXAMPLE_FAMILIES:
            line += missing_examples(lake, topics[fam], inputs[fam], http=channel == "accepted")
        lines.append(line)
    return lines


def traceback_summary(log: str) -> str:
    """The distinct exceptions of the log's tracebacks, and the innermost frames of the first."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    blocks = []
    for start in starts:
        end = next((j for j in range(start + 1, len(lines))
                    if lines[j] and not lines[j].startswith(" ")), len(lines) - 1)
        blocks.append(lines[start:end + 1])
    kinds = Counter(block[-1][:160] for block in blocks)
    return (f"the up log has {len(blocks)} Python traceback(s): "
            + "; ".join(f"{n}× {k}" for k, n in kinds.items())
            + "\n        the first ends:\n        "
            + "\n        ".join(line[:200] for line in blocks[0][-9:]))


# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_garbage_in_nothing_lost_pipeline_lives(fresh: Sensorlake) -> None:
    fresh.flush_interval = FLUSH_INTERVAL
    fresh.extra_env["SENSORLAKE_LAKE__FLUSH_INTERVAL"] = str(FLUSH_INTERVAL)
    fresh.start()
    root = f"fz-{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    mqtt_inputs = generate(random.Random(SEED))
    http_inputs = generate(random.Random(SEED + 1))
    sent = {fam: len(v) for fam, v in mqtt_inputs.items()}
    total = sum(sent.values()) + sum(len(v) for v in http_inputs.values())
    assert total >= MIN_INPUTS, f"harness: only {total} inputs generated"
    mqtt_topic = {fam: f"{root}/m-{fam}/t" for fam in mqtt_inputs}
    http_topic = {fam: f"{root}/h-{fam}/t" for fam in http_inputs}
    timings = {"generate": time.monotonic() - started}
    problems: list[str] = []

    # -- throw it all -------------------------------------------------------------------------
    t = time.monotonic()
    acked, mqtt_problems = mqtt_send(fresh.mqtt_port, [
        (fam, mqtt_topic[fam], payload)
        for fam, payloads in mqtt_inputs.items() for payload in payloads])
    problems += mqtt_problems
    timings["mqtt"] = time.monotonic() - t
    t = time.monotonic()
    tally = http_send(fresh.url, http_topic, http_inputs)
    problems += tally.problems
    timings["http"] = time.monotonic() - t

    # -- then one good reading each way must be committed -------------------------------------
    t = time.monotonic()
    marker = uuid.uuid4().hex
    valid = {"temperature": 21.5, "marker": marker}
    valid_topics = {"MQTT": f"{root}/valid-m/t", "HTTP": f"{root}/valid-h/t"}
    try:
        mqtt_problem = mqtt_send(fresh.mqtt_port, [("valid", valid_topics["MQTT"],
                                                     orjson.dumps(valid))])[1]
        problems += mqtt_problem
        response = httpx.post(f"{fresh.url}/api/v1/ingest",
                              params={"topic": valid_topics["HTTP"]}, json=valid, timeout=30)
        if response.status_code != 200:
            problems.append(f"the valid HTTP reading was answered {response.status_code}: "
                            f"{response.text[:300]}")
    except (OSError, httpx.HTTPError) as exc:
        problems.append(f"could not send the valid readings: {type(exc).__name__}: {exc}")
    listed = ", ".join(f"'{v}'" for v in valid_topics.values())
    seen_sql = f"SELECT DISTINCT topic FROM telemetry WHERE topic IN ({listed})"
    deadline = time.monotonic() + COMMIT_BOUND
    while True:
        result, error = sql(fresh, seen_sql)
        committed = bool(result and result["uncommitted_rows"] == 0
                         and len(result["rows"]) == len(valid_topics))
        if committed or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    timings["commit"] = time.monotonic() - t
    if committed:
        check, error = sql(fresh, f"SELECT topic, temperature, marker FROM telemetry "
                                  f"WHERE topic IN ({listed}) ORDER BY topic")
        if not check or sorted(r[1:] for r in check["rows"]) != [[21.5, marker]] * 2:
            problems.append(f"the valid readings were committed but read back as "
                            f"{check['rows'] if check else error}")
    else:
        seen = {r[0] for r in result["rows"]} if result else set()
        unseen = [k for k, v in valid_topics.items() if v not in seen]
        state = (f"the query failed: {error}" if result is None else
                 (f"not even visible over {' and '.join(unseen)}" if unseen else "visible")
                 + f", uncommitted_rows={result['uncommitted_rows']}")
        problems.append(f"the valid readings sent after the fuzz were not committed within "
                        f"{COMMIT_BOUND:.0f} s ({state})")

    # -- MQTT: every PUBACKed message is a telemetry or dead_letter message -------------------
    both = columns(fresh, "telemetry") & columns(fresh, "dead_letter")
    key = "stream, seq" if "stream" in both else "seq"
    messages: dict[str, set[tuple[Any, ...]]] = {"telemetry": set(), "dead_letter": set()}
    uncommitted = 0
    for table in messages:
        result, error = sql(fresh, f"SELECT DISTINCT topic, {key} FROM {table} "
                                   f"WHERE starts_with(topic, '{root}/m-')")
        if result is None:
            problems.append(f"MQTT accounting: could not read {table}: {error}")
        else:
            messages[table] = {tuple(r) for r in result["rows"]}
            uncommitted = result["uncommitted_rows"]
    accounted = Counter(family_of(r[0]) for r in messages["telemetry"] | messages["dead_letter"])
    published = sum(acked.values())
    if sum(accounted.values()) != published:
        lines = [f"MQTT accounting: {published:,} messages PUBACKed, "
                 f"{sum(accounted.values()):,} accounted for (distinct ({key}) in telemetry "
                 f"{len(messages['telemetry']):,}, in dead_letter "
                 f"{len(messages['dead_letter']):,}; uncommitted_rows={uncommitted}); "
                 f"by family, in send order:"]
        lines += shortfalls(fresh, "PUBACKed", mqtt_inputs, mqtt_topic, acked,
                            {f: f"accounted {accounted[f]:>5}" for f in mqtt_inputs},
                            lambda f: accounted[f] != acked[f])
        problems.append("\n".join(lines))

    # -- HTTP: accepted readings are telemetry rows plus dead letters --------------------------
    stored: dict[str, Counter[str]] = {"telemetry": Counter(), "dead_letter": Counter()}
    for table in stored:
        result, error = sql(fresh, f"SELECT topic, count(*) FROM {table} "
                                   f"WHERE starts_with(topic, '{root}/h-') GROUP BY topic")
        if result is None:
            problems.append(f"HTTP accounting: could not read {table}: {error}")
        else:
            stored[table] = Counter({family_of(t): n for t, n in result["rows"]})
    rows = stored["telemetry"] + stored["dead_letter"]
    if rows != +tally.accepted:
        lines = [f"HTTP accounting: {sum(tally.accepted.values()):,} readings accepted "
                 f"({sum(tally.rejected.values()):,} rejected, "
                 f"{sum(tally.refused_bodies.values())} bodies refused, {tally.requests} "
                 f"requests), stored {sum(stored['telemetry'].values()):,} telemetry + "
                 f"{sum(stored['dead_letter'].values()):,} dead_letter rows; by family:"]
        lines += shortfalls(
            fresh, "accepted", http_inputs, http_topic, tally.accepted,
            {f: f"stored {stored['telemetry'][f]:>5} + {stored['dead_letter'][f]:>5}"
             for f in http_inputs},
            lambda f: rows[f] != tally.accepted[f])
        problems.append("\n".join(lines))

    # -- every dead letter has a reason; what the reasons were, by family ----------------------
    result, error = sql(fresh, f"SELECT topic, count(*) FROM dead_letter WHERE "
                               f"starts_with(topic, '{root}/') AND coalesce(trim(reason), '') = ''"
                               f" GROUP BY topic")
    if result is None:
        problems.append(f"could not check dead-letter reasons: {error}")
    elif result["rows"]:
        problems.append("dead letters without a reason: " + ", ".join(
            f"{t} ({n})" for t, n in result["rows"]))
    reasons, _ = sql(fresh, f"SELECT topic, left(regexp_replace(reason, '[0-9]+', 'N', 'g'), 90)"
                            f" AS why, count(*) AS n FROM dead_letter "
                            f"WHERE starts_with(topic, '{root}/') GROUP BY ALL ORDER BY 1, 3 DESC")

    # -- and it is still alive (said first: a crash explains the counts) ----------------------
    accounting, problems = problems, []
    assert fresh.proc is not None
    if fresh.proc.poll() is not None:
        problems.append(f"sensorlake up exited with code {fresh.proc.returncode}")
    else:
        try:
            health = httpx.get(f"{fresh.url}/healthz", timeout=10)
            body = health.json()
            if health.status_code != 200:
                problems.append(f"/healthz answered {health.status_code}: {body}")
            restarts = body.get("restarts")
            if not isinstance(restarts, dict) or any(restarts.values()):
                problems.append(f"supervised processes restarted: {restarts}")
        except (httpx.HTTPError, ValueError) as exc:
            problems.append(f"/healthz did not answer: {type(exc).__name__}: {exc}")
    log = fresh.log()
    if "Traceback (most recent call last)" in log:
        problems.append(traceback_summary(log))
    problems += accounting

    if problems:
        by_family: dict[str, list[str]] = {}
        for topic, why, n in reasons["rows"] if reasons else []:
            by_family.setdefault(topic.split("/")[1], []).append(f"{n}× {why}")
        notable = [line for line in log.splitlines()
                   if any(f"level={w}" in line for w in ("WARNING", "ERROR", "CRITICAL"))]
        report = [
            f"fuzz (seed {SEED}): {len(problems)} problem(s) after {total:,} inputs "
            f"({sum(sent.values()):,} over MQTT, {sum(len(v) for v in http_inputs.values()):,} "
            f"over HTTP in {tally.requests} requests); "
            + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
            *(f"{i}. {p}" for i, p in enumerate(problems, 1)),
            "inputs per family (per channel): " + ", ".join(f"{f} {n}" for f, n in sent.items()),
            "dead-letter reasons by family (m- MQTT, h- HTTP; digits as N):",
            *(f"      {fam:<22} " + " | ".join(whys[:3]) for fam, whys in by_family.items()),
            *([] if by_family else ["      (none: no dead letter for the fuzz topics)"]),
            "up log, last warnings and errors:",
            *(f"      {line[:220]}" for line in notable[-12:]),
        ]
        pytest.fail("\n".join(report), pytrace=False)
