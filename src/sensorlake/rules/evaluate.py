"""Running rules over a batch of readings: one DuckDB query per rule per batch, never per
message.

The readings a rule's topic filter matches are picked with Arrow (the filter is matched once
per distinct topic, a handful in any batch); the rule's translated SELECT then runs over them in
DuckDB. A rule is bound to each batch schema it meets once (fields a batch lacks read as NULL),
and the bound SQL is kept for the next batch of the same shape.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.config import RuleConfig
from sensorlake.errors import RowsRefused
from sensorlake.rules.dialect import Translated, added_columns, bind, check_rule
from sensorlake.rules.republish import own_filter
from sensorlake.sandbox import sealed_duckdb
from sensorlake.topics import topic_matches

RELATION = "readings"


class RuleFailed(RowsRefused):
    """A rule could not be evaluated over some readings (a square root of a negative number, a
    malformed base64 text): those readings go to dead_letter with this message."""


@dataclass
class RuleCounters:
    matched: int = 0
    """Readings whose topic the rule's filter matched."""
    emitted: int = 0
    """Result rows (after WHERE)."""
    errors: int = 0
    """Readings sent to dead_letter because the rule could not be evaluated over them."""
    last_error: str | None = None
    delivered: int = 0
    """Rows republished or posted (the side-effect actions)."""
    undeliverable: int = 0
    """Rows a receiver refused for good (an HTTP 4xx), or held for so long while it was down
    that they were dropped (beyond the outbox's limit)."""
    last_delivery_error: str | None = None


@dataclass
class CompiledRule:
    config: RuleConfig
    translated: Translated
    counters: RuleCounters = field(default_factory=RuleCounters)
    _bound: dict[pa.Schema, str] = field(default_factory=dict)
    _topics: dict[str, bool] = field(default_factory=dict)
    """What the FROM filter said of each topic seen: a fleet repeats the same few."""
    _added: dict[pa.Schema, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def matches(self, topic: str) -> bool:
        """Whether the rule reads readings of `topic`: its FROM filter matches, and it is not a
        topic the rule republishes to (which would loop its own results back into it)."""
        found = self._topics.get(topic)
        if found is None:
            if len(self._topics) > 100_000:
                self._topics.clear()
            found = self._topics[topic] = (
                topic_matches([self.translated.topic_filter], topic)
                and not (self.config.republish
                         and topic_matches([own_filter(self.config.republish)], topic)))
        return found

    def added(self, schema: pa.Schema) -> list[str]:
        """The columns the pipeline adds to the rule's results (not selected by it)."""
        found = self._added.get(schema)
        if found is None:
            if len(self._added) > 64:
                self._added.clear()
            found = self._added[schema] = added_columns(self.translated, schema)
        return found

    def sql_for(self, schema: pa.Schema) -> str:
        sql = self._bound.get(schema)
        if sql is None:
            sql = bind(self.translated, schema, RELATION)
            if len(self._bound) > 64:
                self._bound.clear()
            self._bound[schema] = sql
        return sql


def compile_rule(rule: RuleConfig) -> CompiledRule:
    return CompiledRule(rule, check_rule(rule))


class Evaluator:
    """Evaluates rules in one DuckDB database of its own (no files, no extensions)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._db = sealed_duckdb()
        self._db.execute("SET TimeZone = 'UTC'")
        self._topics: tuple[pa.Table | None, list[str | None]] = (None, [])

    def matching(self, rule: CompiledRule, readings: pa.Table) -> pa.Table:
        """The readings whose topic the rule's FROM filter matches. Every rule asks this of the
        same batch in turn, so the batch's distinct topics are found once, and each rule
        remembers what its filter said of a topic."""
        if not readings.num_rows or "topic" not in readings.column_names:
            return readings.slice(0, 0)
        cached = self._topics  # one tuple: the commit thread asks too, of other batches
        if cached[0] is not readings:
            cached = self._topics = (readings, pc.unique(readings["topic"]).to_pylist())
        topics = cached[1]
        wanted = [t for t in topics if t is not None and rule.matches(t)]
        if len(wanted) == len(topics):
            return readings
        return readings.filter(pc.is_in(readings["topic"], pa.array(wanted, pa.string())))

    def evaluate(self, rule: CompiledRule, readings: pa.Table) -> pa.Table:
        """The rule's result rows over `readings`, each with its reading's `seq` and `stream`;
        raises RuleFailed when DuckDB cannot evaluate it over these readings."""
        matched = self.matching(rule, readings)
        sql = rule.sql_for(matched.schema)
        with self._lock:
            con = self._db.cursor()
            try:
                con.register(RELATION, matched)
                result = con.sql(sql).to_arrow_table()
            except duckdb.Error as exc:
                message = str(exc).split("\n")[0]
                raise RuleFailed(f"rule '{rule.name}': {message}") from None
            finally:
                con.close()
        return result
