"""Which data files a query can need, so that its cost follows what it asks, not the lake's age.

A query over one table whose WHERE clause bounds `ts` (`ts > now() - INTERVAL 10 MINUTE`,
`ts BETWEEN '2026-05-01' AND '2026-05-02'`) can only match files whose `ts` range, recorded in
the manifests, overlaps those bounds; the others are left out of the view, unopened. The bounds
are read from DuckDB's own parse, and only where leaving files out cannot change the answer: a
single base table in FROM, conjuncts at the top of WHERE (`AND`, never under `OR` or `NOT`),
`ts` compared with an expression that reads no column and no subquery. Anything else reads every
file, as before. Bounds are widened by a minute, so `now()` moving on between planning and
running never excludes a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sensorlake.query.parse import nodes, scalar, syntax_tree, unparse

SLACK_US = 60_000_000
TIME_COLUMN = "ts"
_LOWER = {"COMPARE_GREATERTHAN", "COMPARE_GREATERTHANOREQUALTO"}
_UPPER = {"COMPARE_LESSTHAN", "COMPARE_LESSTHANOREQUALTO"}
_FLIPPED = {"COMPARE_GREATERTHAN": "COMPARE_LESSTHAN",
            "COMPARE_GREATERTHANOREQUALTO": "COMPARE_LESSTHANOREQUALTO",
            "COMPARE_LESSTHAN": "COMPARE_GREATERTHAN",
            "COMPARE_LESSTHANOREQUALTO": "COMPARE_GREATERTHANOREQUALTO",
            "COMPARE_EQUAL": "COMPARE_EQUAL"}


@dataclass(frozen=True)
class TimeBounds:
    """Epoch microseconds (inclusive, already widened) that rows of `table` must fall within."""

    table: str
    lower_us: int | None = None
    upper_us: int | None = None

    def overlaps(self, low: int | None, high: int | None) -> bool:
        """Whether a file whose `ts` spans [low, high] (None: unknown) may hold a match."""
        if low is None or high is None:
            return True  # no statistics (or only nulls): cannot tell, so keep it
        if self.lower_us is not None and high < self.lower_us:
            return False
        return not (self.upper_us is not None and low > self.upper_us)


def time_bounds(select: str) -> TimeBounds | None:
    """The `ts` bounds a SELECT puts on its one table, or None when it has none we can use."""
    return bounds_in(syntax_tree(select))


def bounds_in(tree: dict[str, Any]) -> TimeBounds | None:
    """`time_bounds` of a statement already parsed by `syntax_tree`."""
    statements = tree.get("statements") or []
    if tree.get("error") or len(statements) != 1:
        return None
    node = statements[0].get("node") or {}
    source = node.get("from_table") or {}
    if node.get("type") != "SELECT_NODE" or source.get("type") != "BASE_TABLE":
        return None
    if (node.get("cte_map") or {}).get("map"):
        return None  # a CTE may shadow the table's name
    table = str(source.get("table_name") or "")
    names = {table, str(source.get("alias") or table)}
    lower: list[int] = []
    upper: list[int] = []
    for conjunct in _conjuncts(node.get("where_clause")):
        for kind, value in _bounds_of(conjunct, names):
            if value is None:
                continue
            (lower if kind == "lower" else upper).append(value)
    if not lower and not upper:
        return None
    return TimeBounds(table,
                      max(lower) - SLACK_US if lower else None,
                      min(upper) + SLACK_US if upper else None)


def _conjuncts(where: Any) -> list[dict[str, Any]]:
    if not isinstance(where, dict):
        return []
    if where.get("type") == "CONJUNCTION_AND":
        found: list[dict[str, Any]] = []
        for child in where.get("children") or []:
            found.extend(_conjuncts(child))
        return found
    return [where]


def _is_time_column(node: Any, names: set[str]) -> bool:
    if not isinstance(node, dict) or node.get("class") != "COLUMN_REF":
        return False
    parts = [str(p) for p in node.get("column_names") or []]
    return parts == [TIME_COLUMN] or (len(parts) == 2 and parts[1] == TIME_COLUMN
                                      and parts[0] in names)


def _bounds_of(node: dict[str, Any], names: set[str]) -> list[tuple[str, int | None]]:
    if node.get("class") == "BETWEEN" and _is_time_column(node.get("input"), names):
        return [("lower", _epoch_us(node.get("lower"))), ("upper", _epoch_us(node.get("upper")))]
    if node.get("class") != "COMPARISON":
        return []
    kind, left, right = str(node.get("type")), node.get("left"), node.get("right")
    if _is_time_column(right, names) and kind in _FLIPPED:
        kind, left, right = _FLIPPED[kind], right, left
    if not _is_time_column(left, names):
        return []
    if kind in _LOWER:
        return [("lower", _epoch_us(right))]
    if kind in _UPPER:
        return [("upper", _epoch_us(right))]
    if kind == "COMPARE_EQUAL":
        value = _epoch_us(right)
        return [("lower", value), ("upper", value)]
    return []


def _reads_data(node: Any) -> bool:
    """Whether an expression refers to a column or a subquery (it then has no single value)."""
    return any(n.get("class") in ("COLUMN_REF", "SUBQUERY") or n.get("type") == "SUBQUERY"
               for n in nodes(node))


def _epoch_us(expression: Any) -> int | None:
    """The expression's value as a timestamp with time zone, in epoch microseconds."""
    if not isinstance(expression, dict) or _reads_data(expression):
        return None
    template = syntax_tree("SELECT 1")
    template["statements"][0]["node"]["select_list"] = [expression]
    text = unparse(template)
    if text is None:
        return None
    value = scalar(f"SELECT epoch_us(CAST(({text}) AS TIMESTAMPTZ))")
    return int(value) if isinstance(value, int) else None
