"""HTTP ingest bodies: one JSON object, a JSON array of them, or NDJSON.

Accepted readings are packed many to a stream message (a JSON array), so that a batch costs one
stream write per `max_payload` bytes rather than one per reading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import count

import orjson

from sensorlake.errors import IngestError, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)


@dataclass(frozen=True)
class Rejected:
    index: int
    error: str


def _media_type(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES or media in NDJSON_TYPES:
        return media
    raise UnsupportedMediaType(
        f"content type {content_type or '(none)'!r} is not accepted",
        hint="send Content-Type: application/json (an object or an array of objects) or "
        "application/x-ndjson (one object per line)",
    )


def _ndjson(body: bytes) -> tuple[list[bytes], list[Rejected]]:
    lines = [line for line in (raw.strip() for raw in body.split(b"\n")) if line]
    # Fast path: validate every line in one C call. A line holding two values (`{…},{…}`)
    # changes the count, and any error falls back to the line-by-line walk that names it.
    try:
        values = orjson.loads(b"[" + b",".join(lines) + b"]")
    except orjson.JSONDecodeError:
        pass
    else:
        if len(values) == len(lines) and all(type(v) is dict for v in values):
            return lines, []
    return _ndjson_by_line(lines)


def _ndjson_by_line(lines: list[bytes]) -> tuple[list[bytes], list[Rejected]]:
    accepted: list[bytes] = []
    rejected: list[Rejected] = []
    for index, line in enumerate(lines):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            rejected.append(Rejected(index, f"invalid JSON: {exc}"))
            continue
        if not isinstance(value, dict):
            rejected.append(Rejected(index, f"expected a JSON object, got {_kind(value)}"))
            continue
        try:  # readings travel packed in an array: one level deeper than sent
            orjson.loads(b"[" + line + b"]")
        except orjson.JSONDecodeError:
            rejected.append(Rejected(index, "the reading nests too deep to be stored "
                                            "(about a thousand levels)"))
            continue
        accepted.append(line)
    return accepted, rejected


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def parse_body(body: bytes, content_type: str | None) -> tuple[list[bytes], list[Rejected]]:
    """The JSON text of each acceptable reading, and why the others were rejected (by index)."""
    media = _media_type(content_type)
    if not body.strip():
        raise IngestError("the request body is empty", hint="send at least one JSON object")
    if media in NDJSON_TYPES:
        return _ndjson(body)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"\n" in body.strip():
            return _ndjson(body)  # NDJSON sent as application/json: be forgiving
        raise IngestError(
            f"the body is not valid JSON: {exc}",
            hint="send one JSON object, a JSON array of objects, or NDJSON",
        ) from None
    if isinstance(value, dict):
        return [body.strip()], []
    if isinstance(value, list):
        accepted: list[bytes] = []
        rejected: list[Rejected] = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                accepted.append(orjson.dumps(item))
            else:
                rejected.append(Rejected(index, f"expected a JSON object, got {_kind(item)}"))
        return accepted, rejected
    raise IngestError(
        f"the body is {_kind(value)}, not a JSON object or array",
        hint='send e.g. {"temperature": 21.5}',
    )


def screen(
    accepted: list[bytes], rejected: list[Rejected], refusal: Callable[[bytes], str | None]
) -> tuple[list[bytes], list[Rejected]]:
    """Move the accepted readings that `refusal` finds a reason against into `rejected`, by
    their index in the request, so the sender learns which ones and the rest is still stored."""
    taken = {r.index for r in rejected}
    positions = (i for i in count() if i not in taken)
    kept: list[bytes] = []
    refused = list(rejected)
    for index, reading in zip(positions, accepted, strict=False):
        reason = refusal(reading)
        if reason is None:
            kept.append(reading)
        else:
            refused.append(Rejected(index, reason))
    if len(refused) == len(rejected):
        return accepted, rejected
    return kept, sorted(refused, key=lambda r: r.index)


def pack_messages(readings: list[bytes], max_payload: int) -> list[bytes]:
    """JSON arrays of readings, at most max_payload bytes each; one larger reading is refused."""
    messages: list[bytes] = []
    chunk: list[bytes] = []
    size = 2
    for reading in readings:
        if len(reading) + 2 > max_payload:
            raise PayloadTooLarge(
                f"one reading is {len(reading)} bytes, more than the stream's limit of "
                f"{max_payload}",
                hint="split it, or raise stream.max_payload",
            )
        if chunk and size + len(reading) + 1 > max_payload:
            messages.append(b"[" + b",".join(chunk) + b"]")
            chunk, size = [], 2
        chunk.append(reading)
        size += len(reading) + 1
    if chunk:
        messages.append(b"[" + b",".join(chunk) + b"]")
    return messages
