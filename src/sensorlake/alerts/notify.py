"""Grouping and timing of notifications, with Alertmanager's semantics.

Firing alerts of a channel are grouped by `group_by` (default device and detector). A new group
waits `group_wait` for more alerts before its first notification; after that it is notified at
most once per `group_interval`, and only when its alerts changed (one began firing, one
resolved); while it keeps firing unchanged it is notified again after `repeat_interval`. When
all its alerts have resolved it sends a `resolved` message (unless the channel says
`send_resolved = false`) and is forgotten. Alerts of a silenced device are left out.

Each notification is created in one database transaction with its group's bookkeeping, and
delivered from that durable queue by the channel's loop (`deliver.py`): a restart neither
creates one twice nor loses one waiting to be sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sensorlake.alerts.facts import FIRING, PENDING, RESOLVED, Alert, AlertFacts
from sensorlake.alerts.store import AlertStore
from sensorlake.config import AlertsConfig, ChannelConfig

log = logging.getLogger(__name__)

TICK_S = 0.2
SILENCES_EVERY_S = 1.0
SHOW_EVERY_S = 1.0
GONE_S = 3600.0


@dataclass(frozen=True)
class Timing:
    group_by: list[str]
    group_wait: float
    group_interval: float
    repeat_interval: float
    send_resolved: bool


def timing(alerts: AlertsConfig, channel: ChannelConfig) -> Timing:
    def pick(own: float | None, default: float) -> float:
        return default if own is None else own

    return Timing(channel.group_by if channel.group_by is not None else alerts.group_by,
                  pick(channel.group_wait, alerts.group_wait),
                  pick(channel.group_interval, alerts.group_interval),
                  pick(channel.repeat_interval, alerts.repeat_interval),
                  channel.send_resolved)


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def describe(alert: Alert) -> dict[str, Any]:
    """An alert as notifications, `alerts list` and `/api/v1/alerts` show it."""
    return {
        "status": alert.status, "detector": alert.detector, "device": alert.device,
        "kind": alert.kind, "field": alert.field, "severity": alert.severity,
        "topic": alert.topic, "channel": alert.channel, "value": alert.value,
        "value_text": alert.value_text, "expected": alert.expected,
        "readings": alert.readings, "ts": iso(alert.ts_us / 1e6) if alert.ts_us else None,
        "since": iso(alert.since), "fired_at": iso(alert.fired_at),
        "resolved_at": iso(alert.resolved_at), "condition": "holds" if alert.active
        else "clear",
    }


class Notifier:
    def __init__(self, config: AlertsConfig, facts: AlertFacts, store: AlertStore,
                 dashboard: str, tick: Callable[[], None] = lambda: None) -> None:
        self._config = config
        self._facts = facts
        self._store = store
        self._dashboard = dashboard.rstrip("/")
        self._tick = tick
        self._timing = {c.name: timing(config, c) for c in config.channels}
        self._groups: dict[str, dict[str, Any]] = {}
        self._silences: dict[str, dict[str, Any]] = {}
        self._silences_at = 0.0
        self._shown: list[dict[str, Any]] | None = None
        self._shown_at = 0.0
        self.wake = asyncio.Event()
        self.sent: dict[str, asyncio.Event] = {c.name: asyncio.Event() for c in config.channels}
        """Set when a notification is queued for the channel (wakes its delivery loop)."""

    async def run(self, stop: asyncio.Event) -> None:
        self._groups = await asyncio.to_thread(self._store.groups)
        while not stop.is_set():
            try:
                await self.step(time.time())
            except Exception as exc:  # the database away: the next tick tries again
                log.warning("alerts: %s: %s", type(exc).__name__, exc)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), TICK_S)

    async def step(self, now: float) -> None:
        self._tick()
        if now - self._silences_at >= SILENCES_EVERY_S:
            self._silences = await asyncio.to_thread(self._store.silences)
            self._silences_at = now
        self._facts.advance(now)
        members: dict[str, list[Alert]] = {}
        for alert in list(self._facts.alerts.values()):
            timing = self._timing.get(alert.channel or "")
            if timing is None:
                if alert.status == RESOLVED:  # nobody to tell
                    self._facts.forget(alert.key, alert.episode)
                continue
            members.setdefault(self._group_key(alert, timing), []).append(alert)
        for key in set(members) | set(self._groups):
            await self._group(key, members.get(key, []), now)
        await self._show(now)

    def _group_key(self, alert: Alert, timing: Timing) -> str:
        labels = alert.labels()
        return f"{alert.channel}:" + ",".join(f"{name}={labels[name]}"
                                             for name in timing.group_by)

    def silenced(self, alert: Alert) -> bool:
        return alert.device in self._silences

    async def _group(self, key: str, alerts: list[Alert], now: float) -> None:
        record = self._groups.get(key)
        channel = key.split(":", 1)[0]
        timing = self._timing.get(channel)
        if timing is None:  # a channel removed from the config
            if record is not None:
                await asyncio.to_thread(self._store.notify, key, None, None, 0)
                del self._groups[key]
            return
        firing = [a for a in alerts if a.status == FIRING and not self.silenced(a)]
        notified = {tuple(pair) for pair in (record or {}).get("notified", [])}
        current = {(a.key, a.episode) for a in alerts}
        resolved = [a for a in alerts if a.status == RESOLVED  # a silence mutes these too
                    and (a.key, a.episode) in notified and not self.silenced(a)]
        # Notified alerts missing from the facts (restored from a checkpoint older than the
        # notification, while the stream is read again) come back as that is caught up: no
        # change to tell. A group of nothing but such alerts is forgotten after GONE_S.
        gone = {pair for pair in notified if pair not in current}
        for alert in alerts:  # resolved before anyone was told: nothing to say
            if alert.status == RESOLVED and (alert.key, alert.episode) not in notified:
                self._facts.forget(alert.key, alert.episode)
        if record is None or not record.get("last_sent"):
            if not firing:
                if record is not None:
                    self._groups.pop(key, None)
                return
            record = self._groups.setdefault(key, {"first_at": now, "notified": [],
                                                   "last_sent": None, "count": 0})
            if now - record["first_at"] >= timing.group_wait:
                await self._send(key, record, firing, [], now, repeat=False)
            return
        since = now - record["last_sent"]
        fresh = {(a.key, a.episode) for a in firing} - notified
        if not alerts and gone and since >= GONE_S:
            await asyncio.to_thread(self._store.notify, key, None, None, 0)
            self._groups.pop(key, None)
        elif (fresh or resolved) and since >= timing.group_interval:
            if firing:
                await self._send(key, record, firing, resolved, now, repeat=False)
            elif timing.send_resolved and resolved:
                await self._send(key, record, [], resolved, now, repeat=False)
            else:
                await asyncio.to_thread(self._store.notify, key, None, None, 0)
                self._groups.pop(key, None)
                for alert in resolved:
                    self._facts.forget(alert.key, alert.episode)
        elif firing and not fresh and since >= timing.repeat_interval:
            await self._send(key, record, firing, [], now, repeat=True)

    async def _send(self, key: str, record: dict[str, Any], firing: list[Alert],
                    resolved: list[Alert], now: float, *, repeat: bool) -> None:
        channel, labels_text = key.split(":", 1)
        status = "firing" if firing else "resolved"
        shown = [*firing, *resolved]
        body = {
            "status": status,
            "channel": channel,
            "group_key": key,
            "group_labels": dict(part.split("=", 1) for part in labels_text.split(",")
                                 if "=" in part),
            "repeat": repeat,
            "readings": sum(a.readings for a in shown),
            "devices": len({a.device for a in shown}),
            "firing": len(firing),
            "resolved": len(resolved),
            "alerts": [{**describe(a), "url": self._link(a)} for a in shown],
            "dashboard": self._dashboard or None,
            "number": int(record.get("count", 0)) + 1,
            "created_at": iso(now),
        }
        keep: dict[str, Any] | None = {
            **record, "last_sent": now, "count": body["number"],
            "notified": [[a.key, a.episode] for a in firing]}
        if not firing:
            keep = None  # all resolved: the group is done
        dropped = await asyncio.to_thread(self._store.notify, key, keep,
                                          (channel, status, body), self._config.max_queue)
        if dropped:
            log.error("alerts: channel %s has %s notifications waiting; %s oldest dropped",
                      channel, self._config.max_queue, dropped)
        if keep is None:
            self._groups.pop(key, None)
        else:
            self._groups[key] = keep
        for alert in resolved:
            self._facts.forget(alert.key, alert.episode)
        self.sent[channel].set()

    def _link(self, alert: Alert) -> str | None:
        if not self._dashboard:
            return None
        return f"{self._dashboard}/#/devices/{alert.device}"

    async def _show(self, now: float) -> None:
        if now - self._shown_at < SHOW_EVERY_S and not self._facts.changed:
            return
        shown = [{**describe(a), "silenced": self.silenced(a)}
                 for a in self._facts.alerts.values() if a.status in (PENDING, FIRING)]
        self._facts.changed = False
        self._shown_at = now
        if shown != self._shown:
            await asyncio.to_thread(self._store.show, shown)
            self._shown = shown
