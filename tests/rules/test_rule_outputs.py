"""A rule's table as an output of the pipeline's contract, on real Iceberg tables: it starts at
telemetry's position, a replay stores nothing twice, and it is partitioned as configured —
by a field of the results too, once they bring it."""

from __future__ import annotations

from pyiceberg.catalog import Catalog

from sensorlake.config import RuleConfig
from sensorlake.lake.tables import read_position
from sensorlake.metrics import WriterMetrics
from sensorlake.pipeline.commit import Committer
from sensorlake.rules.evaluate import Evaluator, compile_rule
from sensorlake.rules.outputs import RuleTableOutput
from sensorlake.stream.partitions import Position
from tests.pipeline.test_commit import catalog, decode, outputs  # noqa: F401 (fixture)

SQL = "SELECT station, temperature FROM '#' WHERE temperature < 0"


def output(catalog: Catalog, start: Position, **keys: str) -> RuleTableOutput:  # noqa: F811
    rule = compile_rule(RuleConfig(name="cold", sql=SQL, table="cold", **keys))
    return RuleTableOutput(rule, Evaluator(), catalog, "sensorlake", lambda: start)


def readings(first: int, count: int) -> list[dict[str, object]]:
    return [{"station": f"s{(first + i) % 3}", "temperature": -5.0 + (first + i) % 10,
             "n": first + i} for i in range(count)]


def stored(out: RuleTableOutput) -> list[tuple[str, float]]:
    out.table.refresh()
    rows = out.table.scan(selected_fields=("station", "temperature", "seq")).to_arrow()
    return sorted(zip(rows["station"].to_pylist(), rows["temperature"].to_pylist(),
                      strict=True))


def test_a_new_rule_table_starts_where_telemetry_is_and_a_replay_stores_nothing_twice(
        catalog: Catalog) -> None:  # noqa: F811
    telemetry, _ = outputs(catalog)
    committer = Committer(WriterMetrics())
    old = decode(*readings(0, 10))
    telemetry.add(old)
    committer.commit(telemetry, telemetry.seal(), old.through, telemetry.load_position(), None)
    cold = output(catalog, read_position(telemetry.table))
    assert cold.load_position().covers(old.through)  # what the lake had before: not run over

    new = decode(*readings(10, 10), first=11)
    for _ in range(2):  # the same messages again, as after a crash before the ack
        cold.add(new)
        committer.commit(cold, cold.seal(), new.through, cold.load_position(), None)
    assert stored(cold) == sorted((f"s{n % 3}", -5.0 + n % 10) for n in range(10, 20)
                                  if -5.0 + n % 10 < 0)
    assert read_position(cold.table).covers(new.through)


def test_partitioned_by_day_of_ts_unless_told_otherwise(catalog: Catalog) -> None:  # noqa: F811
    by_day = output(catalog, Position())
    assert [f.name for f in by_day.table.spec().fields] == ["ts_day"]


def test_partitioned_by_a_field_of_the_results_once_they_bring_it(
        catalog: Catalog) -> None:  # noqa: F811
    cold = output(catalog, Position(), partition_by="station")
    assert not cold.table.spec().fields  # the field is not known before the first results
    batch = decode(*readings(0, 10))
    cold.add(batch)
    Committer(WriterMetrics()).commit(cold, cold.seal(), batch.through, cold.load_position(),
                                      None)
    cold.table.refresh()
    assert [f.name for f in cold.table.spec().fields] == ["station_identity"]
    files = [t.file.file_path for t in cold.table.scan().plan_files()]
    assert any("station_identity=s0" in f for f in files), files
    assert len(stored(cold)) == 5
