"""Device state's store and its merge rule, on a real SQLite file: the latest reading by event
time wins, counts add up, and the records and the position land together or not at all."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from sensorlake.state.records import Summarizer
from sensorlake.state.store import StateStore
from sensorlake.stream.partitions import Position

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def readings(rows: list[tuple[str, int, int, float]], *, seq0: int = 1) -> pa.Table:
    """(device, minute of event time, second of arrival, temperature) per reading."""
    ts = pa.timestamp("us", "UTC")
    return pa.table({
        "topic": [f"farm/{d}/telemetry" for d, *_ in rows],
        "device_id": [d for d, *_ in rows],
        "ts": pa.array([T0.replace(minute=m) for _, m, _, _ in rows], ts),
        "received_at": pa.array([T0.replace(hour=11, second=s) for _, _, s, _ in rows], ts),
        "seq": pa.array(range(seq0, seq0 + len(rows)), pa.int64()),
        "stream": ["TELEMETRY"] * len(rows),
        "temperature": [t for *_, t in rows],
    })


def position(seq: int) -> Position:
    return Position({"TELEMETRY": seq}, {"TELEMETRY": "TELEMETRY@1"})


def test_a_late_reading_counts_but_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", "sensorlake")
    summarize = Summarizer()
    first = readings([("gh-1", 30, 1, 21.0), ("gh-1", 10, 2, 19.0), ("gh-2", 5, 3, 7.0)])
    store.apply("device_state", summarize.readings(first), position(3))
    late = readings([("gh-1", 20, 9, 20.0)], seq0=4)  # event time before the latest
    store.apply("device_state", summarize.readings(late), position(4))

    got = {s.device_id: s for s in store.read()}
    gh1 = got["gh-1"]
    assert gh1.values == {"temperature": 21.0}
    assert gh1.ts == int(T0.replace(minute=30).timestamp() * 1_000_000)
    assert gh1.first_ts == int(T0.replace(minute=10).timestamp() * 1_000_000)
    assert gh1.last_received == int(T0.replace(hour=11, second=9).timestamp() * 1_000_000)
    assert (gh1.messages, gh1.readings, gh1.seq) == (3, 3, 1)
    assert got["gh-2"].values == {"temperature": 7.0}
    assert store.position("device_state") == position(4)

    newer = readings([("gh-1", 45, 10, 23.5)], seq0=5)
    store.apply("device_state", summarize.readings(newer), position(5))
    assert store.read("gh-1")[0].values == {"temperature": 23.5}


def test_readings_of_one_message_count_as_one_message(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", "sensorlake")
    batch = readings([("gh-1", 1, 1, 1.0), ("gh-1", 1, 1, 2.0)])
    batch = batch.set_column(batch.schema.get_field_index("seq"), "seq",
                             pa.array([7, 7], pa.int64()))
    store.apply("device_state", Summarizer().readings(batch), position(7))
    state = store.read("gh-1")[0]
    assert (state.messages, state.readings) == (1, 2)
    assert state.values == {"temperature": 2.0}  # the later of two with the same event time


def test_records_and_position_land_together_or_not_at_all(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url, "sensorlake")
    store.apply("device_state", Summarizer().readings(readings([("gh-1", 1, 1, 1.0)])),
                position(1))

    def crash() -> None:
        raise RuntimeError("killed between writing and committing")

    with pytest.raises(RuntimeError):
        store.apply("device_state", Summarizer().readings(
            readings([("gh-1", 2, 2, 2.0), ("gh-9", 2, 2, 9.0)], seq0=2)), position(3),
            before_commit=crash)
    reopened = StateStore(url, "sensorlake")  # what another process reads
    assert [(s.device_id, s.values, s.messages) for s in reopened.read()] == [
        ("gh-1", {"temperature": 1.0}, 1)]
    assert reopened.position("device_state") == position(1)
