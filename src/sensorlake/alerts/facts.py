"""Alerts as Alertmanager and Grafana see them: one per (detector, device), pending until its
condition has held for `for` seconds, then firing, then resolved once the condition has stayed
clear for `keep_firing_for` seconds — so a sensor flapping between good and bad readings stays
one firing alert instead of a message each way.

The detectors tell each alert whether its condition holds (`apply`, from each batch); the
notifier moves alerts along with the clock (`advance`). Both run on the worker's event loop.
The whole set is part of the detectors' checkpoint (`state`), so a restart rebuilds it from the
checkpoint and the stream read after it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sensorlake.detect.detectors import Detection, Verdict

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"


@dataclass
class Alert:
    detector: str
    device: str
    kind: str
    field: str
    severity: str
    topic: str
    channel: str | None
    for_s: float
    keep_firing_for: float
    episode: int = 1
    """Counts the times this (detector, device) started firing anew: a notification names an
    alert by key and episode, so one that resolved and came back is a new alert."""
    active: bool = True
    """Whether the condition holds (the device's latest checked reading is anomalous)."""
    since: float = 0.0
    """Wall-clock time the condition began to hold, this episode."""
    cleared_at: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    readings: int = 0
    """Anomalous readings this episode."""
    value: float | None = None
    value_text: str | None = None
    expected: str = ""
    ts_us: int = 0
    """Event time of the latest anomalous reading."""

    @property
    def key(self) -> str:
        return f"{self.detector}|{self.device}"

    @property
    def status(self) -> str:
        if self.resolved_at is not None:
            return RESOLVED
        return FIRING if self.fired_at is not None else PENDING

    def labels(self) -> dict[str, str]:
        return {"device": self.device, "detector": self.detector, "field": self.field,
                "severity": self.severity, "topic": self.topic}


@dataclass(frozen=True)
class AlertSettings:
    channel: str | None
    severity: str
    for_s: float
    keep_firing_for: float


class AlertFacts:
    def __init__(self, settings: dict[str, AlertSettings]) -> None:
        self._settings = settings
        self.alerts: dict[str, Alert] = {}
        self.changed = False
        """Set by `apply` when an alert began or its condition changed (wakes the notifier)."""

    def apply(self, verdicts: list[Verdict], now: float) -> None:
        for verdict in verdicts:
            key = f"{verdict.detector}|{verdict.device}"
            alert = self.alerts.get(key)
            last = verdict.last
            if verdict.anomalous or verdict.detections:
                if alert is None or alert.status == RESOLVED:
                    if not verdict.anomalous:
                        continue  # bad and good again within one batch: nothing holds
                    alert = self._new(verdict, last, now,
                                      episode=alert.episode + 1 if alert else 1)
                    self.alerts[key] = alert
                    self.changed = True
                else:
                    alert.readings += verdict.detections
                if last is not None:
                    _took(alert, last)
            if alert is None:
                continue
            if verdict.anomalous and not alert.active:
                alert.active, alert.cleared_at = True, None
                self.changed = True
            elif not verdict.anomalous and alert.active:
                alert.active, alert.cleared_at = False, now
                self.changed = True

    def _new(self, verdict: Verdict, last: Detection | None, now: float, episode: int) -> Alert:
        settings = self._settings[verdict.detector]
        alert = Alert(verdict.detector, verdict.device, last.kind if last else "",
                      last.field if last else "", settings.severity,
                      verdict.topic or (last.topic if last else ""), settings.channel,
                      settings.for_s, settings.keep_firing_for, episode=episode, since=now,
                      readings=verdict.detections)
        return alert

    def advance(self, now: float) -> None:
        """Pending → firing after `for`; firing → resolved after `keep_firing_for` clear; a
        pending alert whose condition cleared is dropped (it never fired)."""
        for key, alert in list(self.alerts.items()):
            if alert.status == RESOLVED:
                continue
            if alert.active:
                if alert.fired_at is None and now - alert.since >= alert.for_s:
                    alert.fired_at = now
                    self.changed = True
            elif alert.fired_at is None:
                del self.alerts[key]
            elif alert.cleared_at is not None and now - alert.cleared_at >= alert.keep_firing_for:
                alert.resolved_at = now
                self.changed = True

    def forget(self, key: str, episode: int) -> None:
        alert = self.alerts.get(key)
        if alert is not None and alert.episode == episode and alert.status == RESOLVED:
            del self.alerts[key]

    def state(self) -> list[dict[str, Any]]:
        return [asdict(alert) for alert in self.alerts.values()]

    def restore(self, state: list[dict[str, Any]]) -> None:
        self.alerts = {}
        known = set(Alert.__dataclass_fields__)
        for fields in state:
            alert = Alert(**{k: v for k, v in fields.items() if k in known})
            settings = self._settings.get(alert.detector)
            if settings is None:  # a detector removed from the config
                continue
            alert.channel, alert.severity = settings.channel, settings.severity
            alert.for_s, alert.keep_firing_for = settings.for_s, settings.keep_firing_for
            self.alerts[alert.key] = alert
        self.changed = True


def _took(alert: Alert, detection: Detection) -> None:
    alert.value, alert.value_text = detection.value, detection.value_text
    alert.expected, alert.ts_us = detection.expected, detection.ts_us
    if detection.field:
        alert.field = detection.field
    if detection.topic:
        alert.topic = detection.topic
    if detection.kind:
        alert.kind = detection.kind
