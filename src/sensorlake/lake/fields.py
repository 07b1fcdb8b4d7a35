"""How JSON keys become column names, and how large one reading may be.

A key is kept as written — any Unicode, spaces, leading digits (quote it in SQL: `"1wire"`) —
except that:

- a `.` becomes `_`: dots separate nested fields in SQL, in DuckDB and in Iceberg's own name
  lookup, so `{"a.b": 1}` next to `{"a": {"b": 2}}` would name two columns alike;
- names are case-insensitive, as they are in SQL: a key that differs from an existing column
  (or struct field) only in case is written into it, the first spelling seen names it;
- a key whose name is one of the base columns' in another case (`SEQ`, `Topic`) keeps its value
  as `payload_<key>`, like an exact `seq` or `topic` does;
- the reading is refused (dead-lettered, with the reason) when a key is empty, longer than
  MAX_NAME characters or holds a control character, when two keys of one object come to the
  same column, when it nests deeper than `ingest.max_depth` or has more than `ingest.max_keys`
  keys in all, or when it would grow the table past `lake.max_columns`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from sensorlake.config import Config

MAX_NAME = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FieldProblem(ValueError):
    """Why a reading cannot be stored as it is; the message goes into `dead_letter.reason`."""


@dataclass(frozen=True)
class FieldLimits:
    max_depth: int = 32
    max_keys: int = 1000
    max_columns: int = 1000

    @classmethod
    def from_config(cls, config: Config) -> FieldLimits:
        return cls(max_depth=config.ingest.max_depth, max_keys=config.ingest.max_keys,
                   max_columns=config.lake.max_columns)


def shown(key: str, limit: int = 40) -> str:
    text = key if len(key) <= limit else key[:limit] + "…"
    return repr(text)


def collision(first: str, second: str, name: str) -> str:
    return f"fields {shown(first)} and {shown(second)} would both be column {shown(name)}"


def column_name(key: str) -> str:
    """The name a key takes as a column or struct field; FieldProblem when it cannot be one."""
    if not key:
        raise FieldProblem("a field has an empty name")
    if len(key) > MAX_NAME:
        raise FieldProblem(
            f"field {shown(key)} has a name of {len(key)} characters (at most {MAX_NAME})")
    if _CONTROL.search(key):
        raise FieldProblem(f"field {shown(key)} has a control character in its name")
    return key.replace(".", "_")


class Names:
    """The column (or struct field) names of one level, looked up case-insensitively."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._by_fold: dict[str, str] = {}
        for name in names:
            self._by_fold.setdefault(name.casefold(), name)

    def resolve(self, key: str) -> str:
        """The name `key` is stored under: an existing spelling, or its own column name."""
        name = column_name(key)
        return self._by_fold.get(name.casefold(), name)

    def add(self, name: str) -> None:
        self._by_fold.setdefault(name.casefold(), name)


def count_fields(typ: pa.DataType | pa.Schema) -> int:
    """Columns as a table's width is felt: every field, nested ones included."""
    fields = list(typ) if isinstance(typ, pa.Schema) else _children(typ)
    return sum(1 + count_fields(f.type) for f in fields)


def _children(typ: pa.DataType) -> list[pa.Field]:
    if pa.types.is_struct(typ):
        return list(typ)
    if _is_list(typ):
        return _children(typ.value_type)
    return []


def _is_list(typ: pa.DataType) -> bool:
    return bool(pa.types.is_list(typ) or pa.types.is_large_list(typ))


def _struct_of(typ: pa.DataType | None) -> pa.DataType | None:
    return typ if typ is not None and pa.types.is_struct(typ) else None


def normalize_nested(value: Any, typ: pa.DataType | None, limits: FieldLimits, depth: int = 1
                     ) -> tuple[Any, int]:
    """`value` (an object or array inside a reading) with its keys named by the rules above,
    and how many keys it holds; FieldProblem when it breaks them. The input is not changed; a
    new object is built only where a key is renamed."""
    if depth > limits.max_depth:
        raise FieldProblem(f"the reading nests deeper than {limits.max_depth} levels "
                           "(ingest.max_depth)")
    if isinstance(value, list):
        keys = 0
        items: list[Any] | None = None
        element = typ.value_type if typ is not None and _is_list(typ) else None
        for i, item in enumerate(value):
            if isinstance(item, dict | list):
                new, n = normalize_nested(item, element, limits, depth + 1)
                keys += n
                if new is not item:
                    items = items if items is not None else list(value)
                    items[i] = new
        return (value if items is None else items), keys
    struct = _struct_of(typ)
    names = Names(f.name for f in struct) if struct is not None else Names()
    fields = {f.name: f.type for f in struct} if struct is not None else {}
    out: dict[str, Any] = {}
    source: dict[str, str] = {}
    changed = False
    keys = len(value)
    for key, item in value.items():
        name = names.resolve(key)
        if name in out:
            raise FieldProblem(collision(source[name], key, name))
        names.add(name)
        source[name] = key
        new = item
        if isinstance(item, dict | list):
            new, n = normalize_nested(item, fields.get(name), limits, depth + 1)
            keys += n
        changed = changed or name != key or new is not item
        out[name] = new
    return (out if changed else value), keys
