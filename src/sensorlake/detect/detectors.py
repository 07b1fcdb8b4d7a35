"""The detectors of `[[detectors]]`, run over each decoded batch as it is read.

A detector looks at one field of the readings its topic filter matches, device by device, in
arrival order, and says of each reading whether it is an anomaly. Stateless kinds (range, flag)
are whole-column comparisons; the others keep a little state per device (the last value, a run
length, a rolling window, when it was last seen), which `dump()` and `load()` turn into and
from JSON so that it is checkpointed with the output's position (`output.py`).

Every checked reading also tells the alert whether its condition holds now: a normal reading of
a device clears it, an anomalous one raises it (`Verdict`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorlake.config import DetectorConfig
from sensorlake.lake.schema import numeric_text
from sensorlake.lake.tables import STREAM_FIELD
from sensorlake.topics import topic_matches

MAD_SCALE = 0.6745
"""Makes the MAD of normal data comparable to a standard deviation (Iglewicz and Hoaglin)."""
MIN_BASELINE = 10
"""Readings of a device an outlier detector needs before it judges any."""


@dataclass(frozen=True)
class Detection:
    """One anomalous reading (or a silent device): a row of the anomalies table."""

    detector: str
    kind: str
    device: str
    topic: str
    field: str
    value: float | None
    value_text: str | None
    expected: str
    severity: str
    ts_us: int
    stream: str | None
    seq: int | None


@dataclass(frozen=True)
class Verdict:
    """What a batch left the condition of one (detector, device) as."""

    detector: str
    device: str
    topic: str
    anomalous: bool
    """Whether the device's latest checked reading is an anomaly."""
    detections: int
    last: Detection | None


class Values:
    """One field of a batch: numbers (NaN where missing or not a number; numeric strings such
    as "400" are numbers), which readings have it, and the values as sent."""

    def __init__(self, numbers: np.ndarray, present: np.ndarray,
                 texts: list[str | None] | None) -> None:
        self.numbers = numbers
        self.present = present
        self.texts = texts
        """The values as text, for a text column (None: numbers, shown on demand)."""

    def text(self, i: int) -> str | None:
        if self.texts is not None:
            return self.texts[i]
        value = float(self.numbers[i])
        return None if math.isnan(value) else _show(value)


class Readings:
    """The columns of a batch the detectors read, taken once per batch and shared by all."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.n = table.num_rows
        encoded = pc.dictionary_encode(table["device_id"]).combine_chunks()
        self._names: list[str | None] = encoded.dictionary.to_pylist()
        self._codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        self.topics: list[str] = table["topic"].to_pylist()
        ts = table["ts"].cast(pa.int64()) if "ts" in table.column_names else None
        self.ts_us = (ts.fill_null(0).to_numpy(zero_copy_only=False) if ts is not None
                      else np.zeros(self.n, dtype=np.int64))
        self._streams = table[STREAM_FIELD]
        self._seqs = table["seq"]
        self._fields: dict[str, Values | None] = {}
        self._matches: dict[str, np.ndarray] = {}
        self._groups: dict[str, list[tuple[str, np.ndarray]]] = {}
        self._topic_set: list[str] | None = None

    def device(self, i: int) -> str:
        code = int(self._codes[i])
        return (self._names[code] or "") if code >= 0 else ""

    def stream(self, i: int) -> str | None:
        value: str | None = self._streams[i].as_py()
        return value

    def seq(self, i: int) -> int | None:
        value: int | None = self._seqs[i].as_py()
        return value

    def matching(self, topic_filter: str) -> np.ndarray:
        """Indices of the readings whose topic the filter matches."""
        found = self._matches.get(topic_filter)
        if found is None:
            if self._topic_set is None:
                self._topic_set = list(set(self.topics))
            wanted = {t for t in self._topic_set if topic_matches([topic_filter], t)}
            if len(wanted) == len(self._topic_set):
                found = np.arange(self.n)
            else:
                found = np.fromiter((i for i, t in enumerate(self.topics) if t in wanted),
                                    dtype=np.int64)
            self._matches[topic_filter] = found
        return found

    def groups(self, topic_filter: str) -> list[tuple[str, np.ndarray]]:
        """Per device, the positions (into `matching(topic_filter)`) of its readings, in
        arrival order; readings without a device are left out."""
        found = self._groups.get(topic_filter)
        if found is None:
            codes = self._codes[self.matching(topic_filter)]
            order = np.argsort(codes, kind="stable")
            ordered = codes[order]
            cuts = np.flatnonzero(np.diff(ordered)) + 1
            found = []
            for part in np.split(order, cuts):
                code = int(codes[part[0]]) if len(part) else -1
                name = self._names[code] if code >= 0 else None
                if name is not None:
                    found.append((name, part))
            self._groups[topic_filter] = found
        return found

    def field(self, name: str) -> Values | None:
        """None when no reading of the batch has the field (or it is nested)."""
        if name not in self._fields:
            self._fields[name] = _values(self.table, name)
        return self._fields[name]


def _values(table: pa.Table, name: str) -> Values | None:
    column: Any = None
    parts = name.split(".")
    if parts[0] in table.column_names:
        column = table[parts[0]]
        for part in parts[1:]:
            if not pa.types.is_struct(column.type) or column.type.get_field_index(part) < 0:
                return None
            column = pc.struct_field(column, part)
    if column is None:
        return None
    typ = column.type
    if pa.types.is_boolean(typ) or pa.types.is_floating(typ) or pa.types.is_integer(typ):
        numbers = column.cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)
        return Values(numbers, ~np.isnan(numbers), None)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        texts: list[str | None] = column.to_pylist()
        parsed: dict[str, float] = {}
        numbers = np.full(len(texts), math.nan)
        for i, text in enumerate(texts):
            if text is None:
                continue
            number = parsed.get(text)
            if number is None:
                found = numeric_text(text)
                number = parsed[text] = math.nan if found is None else found
            numbers[i] = number
        present = np.fromiter((t is not None for t in texts), dtype=bool, count=len(texts))
        return Values(numbers, present, texts)
    return None  # nested values are not checked


def _show(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"


class Detector:
    """One `[[detectors]]` entry and the state it keeps per device."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.name = config.name
        self.topic = config.topic
        self.state: dict[str, Any] = {}
        """Per device, what the kind needs (JSON-able)."""

    def check(self, readings: Readings, now_us: int) -> tuple[list[Detection], list[Verdict]]:
        rows = readings.matching(self.topic)
        if not len(rows):
            return [], []
        values = readings.field(self.config.field) if self.config.field else None
        if values is None and self.config.kind != "silence":
            return [], []
        return self._check(readings, rows, values, now_us)

    def _check(self, readings: Readings, rows: np.ndarray, values: Values | None,
               now_us: int) -> tuple[list[Detection], list[Verdict]]:
        """Stateless kinds: a whole-column comparison (`_bad`) of the readings `_checked`."""
        assert values is not None
        checked = self._checked(values, rows)
        bad = self._bad(values.numbers[rows], values, rows) & checked
        expected = self._expected()
        return self._verdicts(readings, rows, values, bad, checked,
                              lambda k: expected)

    def _checked(self, values: Values, rows: np.ndarray) -> np.ndarray:
        """The readings judged: those that have the field."""
        present: np.ndarray = values.present[rows]
        return present

    def _bad(self, numbers: np.ndarray, values: Values, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _expected(self) -> str:
        return ""

    def tick(self, now_us: int) -> tuple[list[Detection], list[Verdict]]:
        """Detections that time alone makes (silence)."""
        return [], []

    def dump(self) -> dict[str, Any]:
        """The state per device as JSON values (a copy: the checkpoint keeps it as it is)."""
        return {device: list(state) for device, state in self.state.items()}

    def load(self, state: dict[str, Any]) -> None:
        self.state = {device: list(value) for device, value in state.items()}

    # -- shared ----------------------------------------------------------------------------

    def _detection(self, readings: Readings, i: int, values: Values | None,
                   expected: str) -> Detection:
        value = float(values.numbers[i]) if values is not None else math.nan
        return Detection(self.name, self.config.kind, readings.device(i), readings.topics[i],
                         self.config.field, None if math.isnan(value) else value,
                         values.text(i) if values is not None else None, expected,
                         self.config.severity, int(readings.ts_us[i]), readings.stream(i),
                         readings.seq(i))

    def _verdicts(self, readings: Readings, rows: np.ndarray, values: Values | None,
                  bad: np.ndarray, checked: np.ndarray, expected: Callable[[int], str]
                  ) -> tuple[list[Detection], list[Verdict]]:
        """The detections (`bad`, by position in `rows`) and, per device, its last checked
        reading's condition."""
        detections: list[Detection] = []
        if bad.any():
            detections = [self._detection(readings, int(rows[k]), values, expected(int(k)))
                          for k in np.flatnonzero(bad).tolist()]
        return detections, self._conditions(readings, rows, bad, checked, detections)

    def _conditions(self, readings: Readings, rows: np.ndarray, bad: np.ndarray,
                    checked: np.ndarray, detections: list[Detection]) -> list[Verdict]:
        by_device: dict[str, list[Detection]] = {}
        for detection in detections:
            by_device.setdefault(detection.device, []).append(detection)
        verdicts = []
        for device, positions in readings.groups(self.topic):
            seen = positions[checked[positions]]
            if not len(seen):
                continue
            last = int(seen[-1])
            mine = by_device.get(device, [])
            verdicts.append(Verdict(self.name, device, readings.topics[int(rows[last])],
                                    bool(bad[last]), len(mine), mine[-1] if mine else None))
        return verdicts


class RangeDetector(Detector):
    def _checked(self, values: Values, rows: np.ndarray) -> np.ndarray:
        """Text that is no number is not judged (it neither raises nor clears)."""
        numbers: np.ndarray = ~np.isnan(values.numbers[rows])
        return numbers

    def _bad(self, numbers: np.ndarray, values: Values, rows: np.ndarray) -> np.ndarray:
        low, high = self.config.min, self.config.max
        bad = np.zeros(len(numbers), dtype=bool)
        with np.errstate(invalid="ignore"):
            if low is not None:
                bad |= numbers < low
            if high is not None:
                bad |= numbers > high
        return bad

    def _expected(self) -> str:
        return f"[{_bound(self.config.min)}, {_bound(self.config.max)}]"


def _bound(value: float | None) -> str:
    return "…" if value is None else _show(value)


class FlagDetector(Detector):
    def _bad(self, numbers: np.ndarray, values: Values, rows: np.ndarray) -> np.ndarray:
        equal = self.config.equal is not None
        target = self.config.equal if equal else self.config.not_equal
        number = _number(target)
        if number is not None:
            same = numbers == number  # a value that is not a number equals no number
        else:
            shown = str(target).lower() if isinstance(target, bool) else str(target)
            texts = values.texts
            same = np.fromiter(((texts[i] if texts is not None else values.text(i)) == shown
                                for i in rows.tolist()), dtype=bool, count=len(rows))
        flags: np.ndarray = np.asarray(same if equal else ~same, dtype=bool)
        return flags

    def _expected(self) -> str:
        if self.config.equal is not None:
            return f"!= {_target(self.config.equal)}"
        return f"= {_target(self.config.not_equal)}"


def _number(value: float | str | bool | None) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return numeric_text(value)
    return None


def _target(value: float | str | bool | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    number = _number(value)
    return _show(number) if number is not None else str(value)


class _PerDevice(Detector):
    """Kinds that follow each device's readings in order, with state carried across batches:
    each device's values of the batch are judged at once (`_judge`)."""

    def _check(self, readings: Readings, rows: np.ndarray, values: Values | None,
               now_us: int) -> tuple[list[Detection], list[Verdict]]:
        assert values is not None
        checked = ~np.isnan(values.numbers[rows])
        bad = np.zeros(len(rows), dtype=bool)
        expected: dict[int, str] = {}
        for device, positions in readings.groups(self.topic):
            mine = positions[checked[positions]]
            if not len(mine):
                continue
            picked = rows[mine]
            state, flags, why = self._judge(self.state.get(device), values.numbers[picked],
                                            readings.ts_us[picked])
            self.state[device] = state
            if flags.any():
                hits = np.flatnonzero(flags)
                bad[mine[hits]] = True
                for k, text in zip(mine[hits].tolist(), why, strict=True):
                    expected[k] = text
        return self._verdicts(readings, rows, values, bad, checked, expected.__getitem__)

    def _judge(self, state: Any, values: np.ndarray, ts_us: np.ndarray
               ) -> tuple[Any, np.ndarray, list[str]]:
        """(the device's new state, which values are anomalies, what was expected of each)."""
        raise NotImplementedError


class SpikeDetector(_PerDevice):
    def _judge(self, state: Any, values: np.ndarray, ts_us: np.ndarray
               ) -> tuple[Any, np.ndarray, list[str]]:
        rate = self.config.rate
        assert rate is not None
        if state is None:
            state = [float(values[0]), int(ts_us[0])]
        previous = np.concatenate(([state[0]], values[:-1]))
        before = np.concatenate(([state[1]], ts_us[:-1]))
        seconds = (ts_us - before) / 1e6
        allowed = rate * np.maximum(seconds, 1.0)
        change = np.abs(values - previous)
        flags = (change > allowed) & (seconds >= 0)  # a late reading has no rate to judge
        why = [f"{_show(float(previous[k]))} ± {_show(round(float(allowed[k]), 6))} "
               f"(rate {_show(rate)}/s)" for k in np.flatnonzero(flags).tolist()]
        latest = int(np.argmax(ts_us))
        if int(ts_us[latest]) >= state[1]:
            state = [float(values[latest]), int(ts_us[latest])]
        return state, flags, why


class StuckDetector(_PerDevice):
    def _judge(self, state: Any, values: np.ndarray, ts_us: np.ndarray
               ) -> tuple[Any, np.ndarray, list[str]]:
        last, run = (state[0], int(state[1])) if state is not None else (math.nan, 0)
        previous = np.concatenate(([last], values[:-1]))
        changed = values != previous
        # The run length at each value: its distance from the last change, plus the run the
        # state carried into this batch for the values before the first change.
        index = np.arange(len(values))
        starts = np.maximum.accumulate(np.where(changed, index, -1))
        runs = np.where(starts >= 0, index - starts + 1, index + 1 + run)
        flags = runs >= self.config.count
        why = [f"a change within {self.config.count} readings"] * int(flags.sum())
        return [float(values[-1]), int(runs[-1])], flags, why


class OutlierDetector(_PerDevice):
    """Robust z-score of each reading against the median and MAD of the device's last
    `window` readings before this batch (one baseline per device per batch)."""

    def _judge(self, state: Any, values: np.ndarray, ts_us: np.ndarray
               ) -> tuple[Any, np.ndarray, list[str]]:
        window: deque[float] = state if state is not None else deque(maxlen=self.config.window)
        flags = np.zeros(len(values), dtype=bool)
        why: list[str] = []
        if len(window) >= min(MIN_BASELINE, self.config.window):
            history = np.fromiter(window, dtype=float, count=len(window))
            median = float(np.median(history))
            spread = float(np.median(np.abs(history - median)))
            if spread == 0:  # mostly constant: the mean absolute deviation instead
                spread = float(np.mean(np.abs(history - median))) * 1.2533
            deviation = np.abs(values - median)
            if spread == 0:
                flags = deviation > 0
            else:
                flags = MAD_SCALE * deviation / spread > self.config.threshold
            half = self.config.threshold * spread / MAD_SCALE
            why = [f"median {_show(round(median, 6))} ± {_show(round(half, 6))} "
                   f"(z ≤ {_show(self.config.threshold)})"] * int(flags.sum())
        window.extend(values.tolist())
        return window, flags, why

    def load(self, state: dict[str, Any]) -> None:
        self.state = {device: deque(values, maxlen=self.config.window)
                      for device, values in state.items()}


class SilenceDetector(Detector):
    """A heartbeat per device: any reading of the topic filter resets its timer."""

    def _check(self, readings: Readings, rows: np.ndarray, values: Values | None,
               now_us: int) -> tuple[list[Detection], list[Verdict]]:
        verdicts = []
        for device, positions in readings.groups(self.topic):
            was = self.state.get(device)
            self.state[device] = [now_us, False]  # [last seen, raised]
            if was is not None and was[1]:
                i = int(rows[positions[-1]])
                verdicts.append(Verdict(self.name, device, readings.topics[i], False, 0, None))
        return [], verdicts

    def tick(self, now_us: int) -> tuple[list[Detection], list[Verdict]]:
        limit = int(self.config.after * 1e6)
        detections, verdicts = [], []
        for device, state in self.state.items():
            last, raised = state
            if raised or now_us - last < limit:
                continue
            state[1] = True
            detection = Detection(self.name, "silence", device, "", "",
                                  round((now_us - last) / 1e6, 3), None,
                                  f"a reading every {_show(self.config.after)} s",
                                  self.config.severity, now_us, None, None)
            detections.append(detection)
            verdicts.append(Verdict(self.name, device, "", True, 1, detection))
        return detections, verdicts


_KINDS: dict[str, type[Detector]] = {
    "range": RangeDetector, "flag": FlagDetector, "spike": SpikeDetector,
    "stuck": StuckDetector, "outlier": OutlierDetector, "silence": SilenceDetector}


def build(config: DetectorConfig) -> Detector:
    return _KINDS[config.kind](config)
