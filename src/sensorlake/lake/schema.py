"""Arrow types from JSON values, and JSON values read as a column's type.

Rules, from DESIGN.md: numbers are double (Iceberg cannot promote int to double later), objects are
structs, arrays are lists, a numeric string where a number is expected is a number. A value that
cannot be read as its column's type raises `TypeConflict`; the caller dead-letters the reading.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pyarrow as pa


class TypeConflict(ValueError):
    """A value cannot be read as the type its column already has."""

    def __init__(self, path: str, value: Any, typ: pa.DataType) -> None:
        try:
            shown = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode(errors="replace")
        except TypeError:  # nested too deep for the serializer
            shown = f"a {type(value).__name__}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"field '{path}': cannot read {shown} as {_type_name(typ)}")
        self.path = path


def _type_name(typ: pa.DataType) -> str:
    if pa.types.is_floating(typ):
        return "double"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "string"
    if pa.types.is_struct(typ):
        return "struct"
    if _is_list(typ):
        return "list"
    return str(typ)


def _is_list(typ: pa.DataType) -> bool:
    return bool(pa.types.is_list(typ) or pa.types.is_large_list(typ))


def infer_type(value: Any) -> pa.DataType | None:
    """None where nothing can be known yet (null, empty object or list of unknowns)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int | float):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    if isinstance(value, dict):
        fields = []
        for key, item in value.items():
            typ = infer_type(item)
            if typ is not None:
                fields.append(pa.field(str(key), typ))
        return pa.struct(fields) if fields else None
    if isinstance(value, list):
        element: pa.DataType | None = None
        for item in value:
            element = merge_types(element, infer_type(item))
        return pa.list_(element) if element is not None else None
    return pa.string()


def merge_types(old: pa.DataType | None, new: pa.DataType | None) -> pa.DataType | None:
    """The type that holds both, adding struct fields; where they disagree the old type wins
    (its values are already written) and the newcomer becomes a conflict when it is read."""
    if old is None:
        return new
    if new is None:
        return old
    if pa.types.is_struct(old) and pa.types.is_struct(new):
        fields = {f.name: f for f in old}
        changed = False
        for f in new:
            if f.name not in fields:
                fields[f.name] = pa.field(f.name, f.type)
                changed = True
            else:
                merged = merge_types(fields[f.name].type, f.type)
                if merged is not None and not merged.equals(fields[f.name].type):
                    fields[f.name] = fields[f.name].with_type(merged)
                    changed = True
        return pa.struct(list(fields.values())) if changed else old
    if _is_list(old) and _is_list(new):
        merged = merge_types(old.value_type, new.value_type)
        if merged is not None and not merged.equals(old.value_type):
            return pa.list_(old.value_field.with_type(merged))
        return old
    return old


def numeric_text(text: str) -> float | None:
    """The finite number a numeric string such as " 400 " or "1e3" is; None for other text."""
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def coerce(value: Any, typ: pa.DataType, path: str) -> Any:
    """`value` as a Python value Arrow accepts for `typ`, or TypeConflict."""
    if value is None:
        return None
    if pa.types.is_floating(typ):
        if isinstance(value, bool):
            raise TypeConflict(path, value, typ)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            number = numeric_text(value)
            if number is not None:
                return number
        raise TypeConflict(path, value, typ)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return orjson.dumps(value).decode()
        raise TypeConflict(path, value, typ)
    if pa.types.is_boolean(typ):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TypeConflict(path, value, typ)
    if pa.types.is_integer(typ):
        if isinstance(value, bool):
            raise TypeConflict(path, value, typ)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise TypeConflict(path, value, typ)
    if pa.types.is_struct(typ):
        if not isinstance(value, dict):
            raise TypeConflict(path, value, typ)
        return {f.name: coerce(value.get(f.name), f.type, f"{path}.{f.name}") for f in typ}
    if _is_list(typ):
        if not isinstance(value, list):
            raise TypeConflict(path, value, typ)
        return [coerce(item, typ.value_type, f"{path}[]") for item in value]
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return value if isinstance(value, bytes) else orjson.dumps(value)
    raise TypeConflict(path, value, typ)


def build_column(
    values: list[Any], typ: pa.DataType, name: str
) -> tuple[pa.Array, dict[int, str]]:
    """An Arrow array of `values` and the rows (index → reason) that conflict with `typ`.

    The whole column goes through Arrow's C++ conversion first; only when that refuses a value
    do we walk it in Python to coerce numeric strings and find the rows that really conflict.
    """
    if not pa.types.is_struct(typ):
        # Arrow silently drops unknown struct keys and reads bools as numbers; only trust the
        # fast path for flat types where it is strict.
        try:
            if not (pa.types.is_floating(typ) and bool in set(map(type, values))):
                return pa.array(values, type=typ), {}
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
    conflicts: dict[int, str] = {}
    coerced: list[Any] = []
    for index, value in enumerate(values):
        try:
            coerced.append(coerce(value, typ, name))
        except TypeConflict as exc:
            conflicts[index] = str(exc)
            coerced.append(None)
    return pa.array(coerced, type=typ), conflicts
