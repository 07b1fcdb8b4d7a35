"""`sensorlake rules test`: what a rule would emit for one payload, decoded exactly as the
pipeline decodes a message on that topic."""

from __future__ import annotations

import time

import pyarrow as pa

from sensorlake.config import Config, RuleConfig
from sensorlake.errors import ConfigError
from sensorlake.ingest.identity import IdentityRules
from sensorlake.lake.records import Decoder
from sensorlake.lake.tables import TELEMETRY_SCHEMA
from sensorlake.rules.evaluate import Evaluator, compile_rule
from sensorlake.stream.feed import Delivery, Drained
from sensorlake.stream.partitions import Account, Partition
from sensorlake.stream.subjects import subject_for_topic


def find_rule(config: Config, name: str) -> RuleConfig:
    for rule in config.rules:
        if rule.name == name:
            return rule
    known = ", ".join(r.name for r in config.rules) or "none"
    raise ConfigError(f"rules.{name}", "no rule has this name",
                      hint=f"rules in this config: {known}")


def try_rule(config: Config, rule: RuleConfig, payload: bytes, topic: str
             ) -> tuple[pa.Table, pa.Table]:
    """(the rule's result rows, the dead letters of the payload) for one message."""
    prefix = config.stream.subject_prefix
    partition = Partition(config.stream.name, f"{config.stream.name}@test", Account.SERVICE,
                          (f"{prefix}.>",), acked=False, subject_prefix=prefix)
    delivery = Delivery(1, time.time_ns(), subject_for_topic(prefix, topic), payload, "", -1)
    decoder = Decoder(IdentityRules(config.ingest.device_id_from), TELEMETRY_SCHEMA.as_arrow())
    batch = decoder.decode([(partition, Drained([delivery], 1, 1))])
    result = Evaluator().evaluate(compile_rule(rule), batch.readings)
    shown = result.drop_columns([c for c in ("seq", "stream") if c in result.column_names])
    return shown, batch.dead
