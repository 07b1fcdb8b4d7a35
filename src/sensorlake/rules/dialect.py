"""AWS IoT SQL (version 2016-03-23), translated into DuckDB SQL that runs over a whole batch.

DuckDB's own parser reads a rule (`SELECT … FROM 'topic/+' WHERE …` parses as a query over a
table named like the topic filter); the translation walks its statement tree, refuses what AWS
IoT SQL does not have (joins, aggregates, subqueries, ORDER BY, unknown functions), and
rewrites each AWS function into DuckDB expressions. Each rewrite is written as a DuckDB SQL
template, parsed once, with `__a0`, `__a1`, … standing for the translated arguments: the tree
shapes stay DuckDB's, whatever its version.

AWS's `Undefined` (a field a message does not have) becomes SQL NULL: a reference to a field
the batch lacks is replaced by NULL when the rule is bound to the batch's schema (`bind`).
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sensorlake.config import RuleConfig
from sensorlake.errors import ConfigError
from sensorlake.query.parse import nodes, syntax_tree, unparse
from sensorlake.topics import check_topic_filter

HIDDEN = ("topic", "received_at", "seq", "stream")
"""Columns of a reading that `*` leaves out, as AWS's `*` is the payload: `topic()` gives the
topic, and `seq` and `stream` are added to every result for exactly-once."""

_VALUE = re.compile(r"^\s*SELECT\s+VALUE\s+", re.IGNORECASE)
_TIMESTAMP = re.compile(r"\btimestamp(\s*\(\s*\))", re.IGNORECASE)
_NOW = "__now_ms_"
"""`timestamp()` as DuckDB's parser can read it (TIMESTAMP is a type name there): a name of the
same length, so positions in error messages stay those of the rule as written."""


class RuleSqlError(ConfigError):
    """A rule's SQL uses what the dialect lacks; the message gives the rule, the position and
    what to write instead."""

    def __init__(self, rule: str, sql: str, position: int | None, message: str,
                 hint: str | None = None) -> None:
        where = ""
        if position is not None and 0 <= position < len(sql):
            line = sql.count("\n", 0, position) + 1
            column = position - (sql.rfind("\n", 0, position) + 1) + 1
            where = f" at line {line}, column {column} (near {sql[position:position + 20]!r})"
        self.position = position
        super().__init__(f"rules.{rule}.sql", f"rule '{rule}'{where}: {message}", hint=hint)


# -- the functions ---------------------------------------------------------------------------

_T = dict[int, str]
"""Per number of arguments, the DuckDB template (`-1`: any number, joined as `__args`)."""

FUNCTIONS: dict[str, _T] = {
    "topic": {0: "topic", 1: "nullif(split_part(topic, '/', __a0), '')"},
    "timestamp": {0: "epoch_ms(now())"},
    _NOW: {0: "epoch_ms(now())"},
    "clientid": {0: "device_id"},
    "principal": {0: "device_id"},
    "newuuid": {0: "uuid()::VARCHAR"},
    "abs": {1: "abs(__a0)"},
    "ceil": {1: "ceil(__a0)"},
    "floor": {1: "floor(__a0)"},
    "round": {1: "round(__a0)"},
    "trunc": {1: "trunc(__a0)",
              2: "trunc(__a0 * power(10, __a1)) / power(10, __a1)"},
    "mod": {2: "(__a0 % __a1)"},
    "power": {2: "power(__a0, __a1)"},
    "sqrt": {1: "sqrt(__a0)"},
    "exp": {1: "exp(__a0)"},
    "ln": {1: "ln(__a0)"},
    "log": {1: "log10(__a0)"},
    "sign": {1: "sign(__a0)"},
    "concat": {-1: "concat(__args)"},
    "lower": {1: "lower(__a0)"},
    "upper": {1: "upper(__a0)"},
    "length": {1: "length(__a0)"},
    "substring": {2: "substring(__a0, __a1 + 1)",
                  3: "substring(__a0, __a1 + 1, greatest(__a2 - __a1, 0))"},
    "trim": {1: "trim(__a0)"},
    "ltrim": {1: "ltrim(__a0)"},
    "rtrim": {1: "rtrim(__a0)"},
    "replace": {3: "replace(__a0, __a1, __a2)"},
    "startswith": {2: "starts_with(__a0, __a1)"},
    "endswith": {2: "ends_with(__a0, __a1)"},
    "indexof": {2: "(instr(__a0, __a1) - 1)"},
    "regexp_matches": {2: "regexp_matches(__a0, __a1)"},
    "regexp_replace": {3: "regexp_replace(__a0, __a1, __a2, 'g')"},
    "regexp_substr": {2: "nullif(regexp_extract(__a0, __a1), '')"},
    "lpad": {2: "concat(repeat(' ', __a1), __a0)"},
    "rpad": {2: "concat(__a0, repeat(' ', __a1))"},
    "isnull": {1: "(__a0 IS NULL)"},
    "isundefined": {1: "(__a0 IS NULL)"},
    "parse_time": {2: "strftime(make_timestamptz(__a1::BIGINT * 1000), __a0)",
                   3: "strftime(timezone(__a2, make_timestamptz(__a1::BIGINT * 1000)), __a0)"},
    "time_to_epoch": {2: "epoch_ms(strptime(__a0, __a1))"},
    "encode": {2: "to_base64(encode(__a0::VARCHAR))"},
    "decode": {2: "decode(from_base64(__a0))"},
    "get": {2: ""},  # by the key's kind: a field name or a list index (see _get)
    "get_or_default": {3: ""},
}
"""AWS IoT SQL's functions that sensorlake evaluates, by lower-case name."""

_PATTERN_ARGUMENT = {"parse_time": 0, "time_to_epoch": 1}
"""Functions whose argument at this index is a Java date pattern, given as a constant."""

_OPERATORS = {"+", "-", "*", "/", "%"}
_AGGREGATES = {"count", "count_star", "sum", "avg", "min", "max", "first", "last", "list",
               "string_agg", "median", "stddev"}

_CASTS = {"DECIMAL": "DOUBLE", "DOUBLE": "DOUBLE", "FLOAT": "DOUBLE", "INT": "BIGINT",
          "INTEGER": "BIGINT", "BIGINT": "BIGINT", "STRING": "VARCHAR", "VARCHAR": "VARCHAR",
          "BOOL": "BOOLEAN", "BOOLEAN": "BOOLEAN"}
"""`cast(x AS …)`: AWS's type names (as DuckDB's parser normalises them) and what they become.
A value that does not convert gives NULL, as AWS gives Undefined."""

_ALLOWED = {"FUNCTION", "COLUMN_REF", "CONSTANT", "CAST", "CASE", "COMPARISON", "CONJUNCTION",
            "OPERATOR", "STAR", "TYPE"}
_ALLOWED_OPERATORS = {"OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN",
                      "COMPARE_NOT_IN"}

_JAVA_PATTERN = [("yyyy", "%Y"), ("yy", "%y"), ("MMMM", "%B"), ("MMM", "%b"), ("MM", "%m"),
                 ("dd", "%d"), ("HH", "%H"), ("hh", "%I"), ("mm", "%M"), ("ss", "%S"),
                 ("SSS", "%g"), ("a", "%p"), ("EEEE", "%A"), ("EEE", "%a"), ("Z", "%z"),
                 ("XXX", "%z"), ("z", "%Z"), ("M", "%-m"), ("d", "%-d"), ("H", "%-H")]
"""Java `DateTimeFormatter` letters (what AWS's time functions take) and DuckDB's equivalents."""


def java_pattern(pattern: str) -> str:
    """A Java date pattern (`yyyy-MM-dd'T'HH:mm:ss.SSSZ`) as a strftime format."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "'":  # quoted text; '' is a quote
            end = pattern.find("'", i + 1)
            end = len(pattern) if end < 0 else end
            out.append(pattern[i + 1:end].replace("%", "%%") or "'")
            i = end + 1
            continue
        for letters, code in _JAVA_PATTERN:
            if pattern.startswith(letters, i):
                out.append(code)
                i += len(letters)
                break
        else:
            if char.isalpha():
                raise ValueError(f"the date pattern letter {char!r} is not supported")
            out.append("%%" if char == "%" else char)
            i += 1
    return "".join(out)


# -- translation -----------------------------------------------------------------------------

_templates: dict[str, dict[str, Any]] = {}


def _template(sql: str) -> dict[str, Any]:
    """The expression tree of a template, parsed once."""
    if sql not in _templates:
        tree = syntax_tree(f"SELECT {sql}")
        assert not tree.get("error"), (sql, tree)
        _templates[sql] = tree["statements"][0]["node"]["select_list"][0]
    return copy.deepcopy(_templates[sql])


def _fill(node: Any, args: list[dict[str, Any]]) -> Any:
    """The template with each `__aN` column reference replaced by argument N."""
    if isinstance(node, dict):
        if node.get("class") == "COLUMN_REF":
            names = node.get("column_names") or []
            if len(names) == 1 and names[0].startswith("__a"):
                return copy.deepcopy(args[int(names[0][3:])])
        return {k: _fill(v, args) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, args) for v in node]
    return node


def _apply(template: str, args: list[dict[str, Any]]) -> dict[str, Any]:
    """The template's tree with the arguments in place."""
    filled: dict[str, Any] = _fill(_template(template), args)
    return filled


def _constant(node: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, text) of a literal, None for anything else."""
    if node.get("class") != "CONSTANT":
        return None
    literal = node.get("literal")
    if isinstance(literal, dict):
        return str(literal.get("kind", "")), str(literal.get("text", ""))
    value = node.get("value")  # older DuckDB trees: {"type": {"id": …}, "value": …}
    if isinstance(value, dict):
        kind = str((value.get("type") or {}).get("id", ""))
        return ("STRING" if kind == "VARCHAR" else kind), str(value.get("value", ""))
    return None


def _string(text: str) -> dict[str, Any]:
    return _template("'" + text.replace("'", "''") + "'")


@dataclass
class Translated:
    select: dict[str, Any]
    """The SELECT node, FROM and all, in DuckDB's terms (FROM still names the filter)."""
    topic_filter: str
    value: bool
    """`SELECT VALUE`: each result is the single value, not an object."""
    columns: list[list[str]] = field(default_factory=list)
    """Every field path the rule reads, as written."""


class _Translator:
    def __init__(self, rule: str, sql: str) -> None:
        self.rule = rule
        self.sql = sql

    def fail(self, node: dict[str, Any] | None, message: str, hint: str | None = None
             ) -> RuleSqlError:
        position = node.get("query_location") if node else None
        if not isinstance(position, int) or position > len(self.sql):
            position = None
        return RuleSqlError(self.rule, self.sql, position, message, hint)

    def expression(self, node: dict[str, Any]) -> dict[str, Any]:
        out = self._expression(node)
        if node.get("alias"):
            out["alias"] = node["alias"]
        return out

    def _expression(self, node: dict[str, Any]) -> dict[str, Any]:
        kind = node.get("class")
        if kind not in _ALLOWED:
            what = str(kind or node.get("type", "this")).replace("_", " ").lower()
            raise self.fail(node, f"AWS IoT SQL has no {what} expression here",
                            hint="rules use fields, constants, operators, CASE, IN and the "
                                 "functions listed in docs/rules.md")
        if kind == "OPERATOR" and node.get("type") not in _ALLOWED_OPERATORS:
            raise self.fail(node, f"the operator {node.get('type')} is not supported",
                            hint="see docs/rules.md for the supported operators")
        if kind == "FUNCTION":
            return self.function(node)
        if kind == "CAST":
            return self.cast(node)
        return {k: self.children(v) for k, v in node.items()}

    def children(self, value: Any) -> Any:
        if isinstance(value, dict) and "class" in value:
            return self.expression(value)
        if isinstance(value, dict):
            return {k: self.children(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.children(v) for v in value]
        return value

    def cast(self, node: dict[str, Any]) -> dict[str, Any]:
        type_name = str((node.get("type_expr") or {}).get("type_name")
                        or (node.get("cast_type") or {}).get("id") or "").upper()
        target = _CASTS.get(type_name)
        if target is None:
            raise self.fail(node, f"cast to {type_name or 'this type'} is not supported",
                            hint="cast to DECIMAL, INT, STRING or BOOL")
        child = self.expression(node["child"])
        return _apply(f"TRY_CAST(__a0 AS {target})", [child])

    def function(self, node: dict[str, Any]) -> dict[str, Any]:
        name = str(node.get("function_name", "")).lower()
        args = [a.get("expression", a) if isinstance(a, dict) and "expression" in a else a
                for a in node.get("children") or node.get("arguments") or []]
        if node.get("is_operator") or name in _OPERATORS:
            if name not in _OPERATORS and name not in {"~~", "!~~"}:
                raise self.fail(node, f"the operator {name!r} is not supported",
                                hint="use + - * / % and the comparisons")
            return {**node, **{k: self.children(node[k]) for k in ("children", "arguments")
                               if k in node}}
        if node.get("distinct") or (node.get("filter") is not None) or (
                (node.get("order_bys") or {}).get("orders")):
            raise self.fail(node, f"{name}(…) takes no DISTINCT, FILTER or ORDER BY")
        templates = FUNCTIONS.get(name)
        if templates is None and name in _AGGREGATES:
            raise self.fail(node, f"{name.removesuffix('_star')}() is an aggregate, and AWS IoT "
                            "SQL has none", hint="a rule handles each reading on its own; "
                            "aggregate with `sensorlake query` over the rule's table")
        if templates is None:
            close = difflib.get_close_matches(
                name, [f for f in FUNCTIONS if not f.startswith("__")], n=1)
            raise self.fail(node, f"unknown function {name}()",
                            hint=(f"did you mean {close[0]}()? " if close else "")
                            + "docs/rules.md lists the functions rules may call")
        if name in ("get", "get_or_default"):
            return self.get(node, name, args)
        template = templates.get(len(args), templates.get(-1))
        if template is None:
            counts = " or ".join(str(n) for n in sorted(templates))
            raise self.fail(node, f"{name}() takes {counts} argument(s), not {len(args)}")
        translated = [self.argument(node, name, i, a) for i, a in enumerate(args)]
        if -1 in templates:
            joined = ", ".join(f"__a{i}" for i in range(len(translated)))
            template = template.replace("__args", joined)
        if name in ("encode", "decode"):
            encoding = _constant(args[1])
            if encoding is None or encoding[1].lower() != "base64":
                raise self.fail(args[1], f"{name}() supports only the 'base64' encoding")
        return _apply(template, translated)

    def argument(self, call: dict[str, Any], name: str, index: int, arg: dict[str, Any]
                 ) -> dict[str, Any]:
        if _PATTERN_ARGUMENT.get(name) == index:
            constant = _constant(arg)
            if constant is None or constant[0] != "STRING":
                raise self.fail(arg, f"{name}()'s date pattern must be a string constant")
            try:
                return _string(java_pattern(constant[1]))
            except ValueError as exc:
                raise self.fail(arg, f"{name}(): {exc}", hint="patterns use yyyy MM dd HH mm "
                                "ss SSS Z and quoted text") from None
        if arg.get("class") == "STAR":
            raise self.fail(arg, f"{name}(*) is not supported",
                            hint="name the field: f(field) or get(*, 'field-name')")
        return self.expression(arg)

    def get(self, node: dict[str, Any], name: str, args: list[dict[str, Any]]
            ) -> dict[str, Any]:
        want = 2 if name == "get" else 3
        if len(args) != want:
            raise self.fail(node, f"{name}() takes {want} arguments, not {len(args)}")
        key = _constant(args[1])
        if key is None:
            raise self.fail(args[1], f"{name}()'s key must be a constant: a field name in "
                                     "quotes or a list index")
        target = args[0]
        if key[0] == "STRING":
            if target.get("class") == "STAR":  # get(*, 'key-with-hyphens'): a payload field
                path = [key[1]]
            elif target.get("class") == "COLUMN_REF":
                path = [*target["column_names"], key[1]]
            else:
                raise self.fail(target, f"{name}() reads a field of a field or of *")
            found: dict[str, Any] = {**_template("__a0"), "column_names": path,
                                     "query_location": node.get("query_location")}
        else:
            index = int(float(key[1]))
            found = _apply(f"list_extract(__a0, {index + 1})",
                          [self.expression(target)])
        if name == "get_or_default":
            return _apply("coalesce(__a0, __a1)", [found, self.expression(args[2])])
        return found


def translate(rule: str, sql: str) -> Translated:
    """The rule's SELECT in DuckDB's terms; raises RuleSqlError naming what is wrong."""
    value = bool(_VALUE.match(sql))
    text = _VALUE.sub("SELECT ", sql, count=1) if value else sql
    shift = len(sql) - len(text)
    text = _TIMESTAMP.sub(lambda m: _NOW + m.group(1), text)
    translator = _Translator(rule, sql)
    tree = syntax_tree(text)
    if tree.get("error"):
        message = str(tree.get("error_message", "it does not parse"))
        found = re.search(r"LINE \d+: ", message)
        raise RuleSqlError(rule, sql, None, "SQL syntax error: " + message.split("\n")[0],
                           hint="rules are SELECT … FROM 'topic/filter' [WHERE …]"
                           if not found else None)
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise translator.fail(None, "a rule is one SELECT statement")
    select = statements[0]["node"]
    if select.get("type") != "SELECT_NODE":
        raise translator.fail(None, "a rule is one SELECT … FROM 'topic/filter' [WHERE …]",
                              hint="UNION and other set operations are not part of the dialect")
    _shift(select, shift)
    if (select.get("cte_map") or {}).get("map"):
        raise translator.fail(None, "WITH is not part of AWS IoT SQL")
    for part, what in (("group_expressions", "GROUP BY"), ("having", "HAVING"),
                       ("qualify", "QUALIFY"), ("modifiers", "ORDER BY / LIMIT / DISTINCT"),
                       ("sample", "USING SAMPLE")):
        if select.get(part):
            raise translator.fail(None, f"{what} is not part of AWS IoT SQL",
                                  hint="a rule handles each reading on its own")
    source = select.get("from_table") or {}
    if source.get("type") != "BASE_TABLE" or source.get("schema_name"):
        raise translator.fail(source or None, "FROM takes one topic filter in quotes, "
                              "e.g. FROM 'farm/+/telemetry'",
                              hint="joins and subqueries are not part of AWS IoT SQL")
    topic_filter = str(source.get("table_name", ""))
    try:
        check_topic_filter(topic_filter)
    except Exception as exc:
        raise translator.fail(source, f"FROM {topic_filter!r} is not an MQTT topic filter: "
                              f"{exc}") from None
    if value and len(select["select_list"]) != 1:
        raise translator.fail(None, "SELECT VALUE takes exactly one expression")
    select["select_list"] = [_named(translator.expression(e), e, i)
                             for i, e in enumerate(select["select_list"], 1)]
    if select.get("where_clause") is not None:
        select["where_clause"] = translator.expression(select["where_clause"])
    columns = [n["column_names"] for n in nodes(select) if n.get("class") == "COLUMN_REF"]
    return Translated(select, topic_filter, value, columns)


def _named(out: dict[str, Any], written: dict[str, Any], index: int) -> dict[str, Any]:
    """A result column's name: its alias, the field it reads, the function it calls (as AWS
    names `topic()` "topic"), or `_N` for the N-th expression of any other kind."""
    if out.get("alias") or written.get("class") in ("COLUMN_REF", "STAR"):
        return out
    if written.get("class") == "FUNCTION" and not written.get("is_operator"):
        name = str(written.get("function_name", "")).lower()
        out["alias"] = name if name.isidentifier() else f"_{index}"
    else:
        out["alias"] = f"_{index}"
    return out


def _shift(tree: Any, by: int) -> None:
    """Positions in the tree, moved back to the rule as written (SELECT VALUE was shortened)."""
    if not by:
        return
    for node in nodes(tree):
        position = node.get("query_location")
        if isinstance(position, int) and position < 2**62:
            node["query_location"] = position + by


# -- binding to a batch ----------------------------------------------------------------------

def _resolves(schema: pa.Schema, path: list[str]) -> bool:
    if path[0] not in schema.names:
        return False
    kind = schema.field(path[0]).type
    for name in path[1:]:
        if not pa.types.is_struct(kind) or kind.get_field_index(name) < 0:
            return False
        kind = kind.field(name).type
    return True


def _bind(node: Any, schema: pa.Schema) -> Any:
    if isinstance(node, dict):
        if node.get("class") == "COLUMN_REF":
            path = node.get("column_names") or []
            if path and not _resolves(schema, path):
                null = _template("NULL")
                null["alias"] = node.get("alias") or path[-1]  # named as the field would be
                return null
            return node
        if node.get("class") == "STAR":
            star = _template("* EXCLUDE (" + ", ".join(h for h in HIDDEN if h in schema.names)
                             + ")") if any(h in schema.names for h in HIDDEN) else node
            return star
        return {k: _bind(v, schema) for k, v in node.items()}
    if isinstance(node, list):
        return [_bind(v, schema) for v in node]
    return node


def bind(translated: Translated, schema: pa.Schema, relation: str) -> str:
    """DuckDB SQL of the rule over `relation`, a batch of readings with `schema`: fields the
    batch lacks read as NULL, and every result row carries its reading's `seq` and `stream`
    (and `ts` where the rule does not choose its own)."""
    select = _bind(copy.deepcopy(translated.select), schema)
    select["from_table"] = {**select["from_table"], "table_name": relation,
                            "qualified_name": {"path": [relation]}}
    if translated.value:
        select["select_list"][0]["alias"] = "value"
    names = set(_output_names(select["select_list"], schema))
    extra = [c for c in ("ts", "seq", "stream") if c not in names and c in schema.names]
    for column in extra:
        select["select_list"].append({**_template(column), "alias": column})
    sql = unparse({"error": False, "statements": [{"node": select, "named_param_map": []}]})
    if sql is None:
        raise RuleSqlError("?", "", None, "the rule could not be written as DuckDB SQL")
    return sql


def added_columns(translated: Translated, schema: pa.Schema) -> list[str]:
    """The columns `bind` adds to the rule's own (`ts`, `seq`, `stream`) for this schema: what
    a republished or posted row leaves out."""
    select = _bind(copy.deepcopy(translated.select), schema)
    if translated.value:
        return [c for c in ("ts", "seq", "stream") if c in schema.names]
    names = set(_output_names(select["select_list"], schema))
    return [c for c in ("ts", "seq", "stream") if c not in names and c in schema.names]


def _output_names(select_list: list[dict[str, Any]], schema: pa.Schema) -> Iterator[str]:
    for node in select_list:
        if node.get("alias"):
            yield str(node["alias"])
        elif node.get("class") == "COLUMN_REF":
            yield str(node["column_names"][-1])
        elif node.get("class") == "STAR":
            excluded = {str(e) for e in _excluded(node)}
            yield from (n for n in schema.names if n not in excluded)


def _excluded(star: dict[str, Any]) -> Iterator[str]:
    for entry in star.get("exclude_list") or []:
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, dict):
            yield from (str(v) for v in entry.values() if isinstance(v, str))
    for entry in star.get("qualified_exclude_list") or []:
        if isinstance(entry, dict):
            path = entry.get("column_names") or entry.get("path") or []
            if path:
                yield str(path[-1])



_PARTITION = re.compile(r"^(?:(year|month|day|hour)\((\w+)\)|(\w+))$")


def partition_field(spec: str) -> tuple[str, str]:
    """(`identity`|`year`|`month`|`day`|`hour`, field) of a rule's `partition_by`."""
    found = _PARTITION.match(spec.strip())
    if not found:
        raise ValueError(spec)
    if found.group(3):
        return "identity", found.group(3)
    return found.group(1), found.group(2)


def check_rule(rule: RuleConfig) -> Translated:
    """The rule translated, and bound once to an empty batch: what can be wrong with it is
    found as the config loads."""
    translated = translate(rule.name, rule.sql)
    if rule.partition_by is not None:
        try:
            partition_field(rule.partition_by)
        except ValueError:
            raise ConfigError(f"rules.{rule.name}.partition_by",
                              f"{rule.partition_by!r} is not a field or a transform of one",
                              hint="write a field name, or day(ts), hour(ts), month(…), "
                                   "year(…)") from None
    if rule.http is not None and not re.match(r"^https?://[^\s/]+", rule.http):
        raise ConfigError(f"rules.{rule.name}.http", f"{rule.http!r} is not an http(s) URL",
                          hint="write the full URL, e.g. http://127.0.0.1:9000/hook")
    if rule.republish is not None:
        from sensorlake.rules.republish import check_template

        check_template(rule.name, rule.republish)
    bind(translated, pa.schema([]), "readings")
    return translated
