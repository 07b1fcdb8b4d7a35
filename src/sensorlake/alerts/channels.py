"""The bodies Discord, Slack and a generic webhook receive, and each one's rules for how often.

Discord allows about 5 requests per 2 s per webhook and answers 429 with `retry_after`: seconds
on the versioned API (`/api/v10/webhooks/…`), milliseconds on the unversioned URL users copy
from Discord — so we post to the versioned URL, and read the unit by the path actually posted
to. Slack allows about one message per second and answers 429 with `Retry-After`. Each client
spaces its requests to stay under those limits before any 429 comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx

from sensorlake import __version__
from sensorlake.config import ChannelConfig

_UNVERSIONED = re.compile(r"/api/webhooks/")
_VERSIONED = re.compile(r"/api/v\d+/")
DISCORD_API = "/api/v10/webhooks/"
MAX_RETRY_AFTER_S = 3600.0
MAX_ITEMS = 10
"""Alerts shown one by one in a message (Discord allows 10 embeds); the rest are counted."""
_COLORS = {"firing": 0xE5484D, "resolved": 0x30A46C, "test": 0x3E63DD}


def mask_url(url: str) -> str:
    """`url` fit to show and log: the password, query values and the secret last part of the
    path (the token of a Discord or Slack webhook) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable url)"
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[-1]}"
    segments = parts.path.split("/")
    if len(segments) > 2 and len(segments[-1]) >= 8:
        segments[-1] = "***"
    query = "&".join(f"{quote(k)}=***"
                     for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(netloc=netloc, path="/".join(segments), query=query))


def post_url(channel: ChannelConfig) -> str:
    if channel.type == "discord" and _UNVERSIONED.search(channel.url):
        return _UNVERSIONED.sub(DISCORD_API, channel.url, count=1)
    return channel.url


@dataclass(frozen=True)
class Outcome:
    ok: bool
    code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    """Seconds the endpoint asked us to wait (429)."""
    refused: bool = False
    """A 4xx other than 408 and 429: no retry will change the answer."""


class ChannelClient:
    def __init__(self, channel: ChannelConfig) -> None:
        self.channel = channel
        self.url = post_url(channel)
        self.shown_url = mask_url(self.url)
        # A margin over the documented limits: the endpoint counts arrivals, we count sends.
        per, window = {"discord": (5, 2.1), "slack": (1, 1.05)}.get(channel.type, (0, 0.0))
        self._per, self._window = per, window
        self._sent: deque[float] = deque()
        self._client: httpx.AsyncClient | None = None
        self.blocked_until = 0.0

    async def wait_turn(self, stop: asyncio.Event) -> None:
        """Until a request may go (after any 429's wait, and under the channel's own limit) or
        `stop` is set."""
        while True:
            now = time.monotonic()
            wait = self.blocked_until - now
            if self._per:
                while self._sent and now - self._sent[0] >= self._window:
                    self._sent.popleft()
                if len(self._sent) >= self._per:
                    wait = max(wait, self._window - (now - self._sent[0]))
            if wait <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set():
                return

    async def send(self, body: dict[str, Any]) -> Outcome:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.channel.timeout)
        self._sent.append(time.monotonic())
        try:
            reply = await self._client.post(self.url, json=render(self.channel.type, body),
                                            headers={"User-Agent": f"sensorlake/{__version__}"})
        except httpx.HTTPError as exc:
            error = f"POST {self.shown_url}: {type(exc).__name__}: {exc}"
            for secret in (self.url, self.channel.url):
                error = error.replace(secret, self.shown_url)
            return Outcome(False, error=error)
        if reply.headers.get("X-RateLimit-Remaining") == "0":  # Discord: the bucket is empty
            self.block(_seconds(reply.headers.get("X-RateLimit-Reset-After")))
        if reply.status_code < 300:
            return Outcome(True, reply.status_code)
        text = reply.text[:300]
        if reply.status_code == 429:
            wait = self._retry_after(reply)
            self.block(wait)
            return Outcome(False, 429, f"HTTP 429 {text!r}", retry_after=wait)
        refused = 400 <= reply.status_code < 500 and reply.status_code != 408
        return Outcome(False, reply.status_code, f"HTTP {reply.status_code} {text!r}",
                       refused=refused)

    def block(self, seconds: float | None) -> None:
        """No request goes for `seconds` from now."""
        if seconds:
            self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)

    def _retry_after(self, reply: httpx.Response) -> float:
        waits = [_seconds(reply.headers.get("Retry-After")),
                 _seconds(reply.headers.get("X-RateLimit-Reset-After"))]
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            given = float(reply.json()["retry_after"])
            # Seconds on a versioned Discord URL, milliseconds on an unversioned one.
            versioned = self.channel.type != "discord" or _VERSIONED.search(self.url)
            waits.append(given if versioned else given / 1000)
        found = [w for w in waits if w is not None]
        return min(max(found), MAX_RETRY_AFTER_S) if found else 1.0

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _seconds(text: str | None) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 else None


# -- bodies ----------------------------------------------------------------------------------

def render(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    if kind == "discord":
        return _discord(body)
    if kind == "slack":
        return _slack(body)
    return {"version": "1", **body}


def summary(body: dict[str, Any]) -> str:
    status = body["status"].upper()
    labels = ", ".join(f"{k}={v}" for k, v in body.get("group_labels", {}).items())
    if body["status"] == "test":
        return f"[TEST] sensorlake channel '{body['channel']}' works"
    readings, devices = body.get("readings", 0), body.get("devices", 0)
    again = " (still firing)" if body.get("repeat") else ""
    return (f"[{status}] {labels}{again}: {len(body['alerts'])} alerts, {readings} anomalous "
            f"readings from {devices} devices")


def _value(alert: dict[str, Any]) -> str:
    if alert.get("value_text") is not None:
        return str(alert["value_text"])
    return "-" if alert.get("value") is None else str(alert["value"])


def _discord(body: dict[str, Any]) -> dict[str, Any]:
    color = _COLORS.get(body["status"], 0x999999)
    embeds = []
    alerts = body.get("alerts", [])
    for alert in alerts[:MAX_ITEMS]:
        embeds.append({
            "title": f"[{alert['status'].upper()}] {alert['detector']} on {alert['device']}",
            "url": alert.get("url") or body.get("dashboard") or None,
            "color": _COLORS.get(alert["status"], color),
            "timestamp": alert.get("ts"),
            "fields": [
                {"name": "Device", "value": alert["device"] or "-", "inline": True},
                {"name": "Field", "value": alert.get("field") or "-", "inline": True},
                {"name": "Value", "value": _value(alert), "inline": True},
                {"name": "Expected", "value": alert.get("expected") or "-", "inline": True},
                {"name": "Time", "value": alert.get("ts") or "-", "inline": True},
                {"name": "Readings", "value": str(alert.get("readings", 0)), "inline": True},
            ],
        })
    content = summary(body)
    if len(alerts) > MAX_ITEMS:
        content += f" ({len(alerts) - MAX_ITEMS} more not shown)"
    if body.get("dashboard"):
        content += f"\n{body['dashboard']}"
    return {"username": "sensorlake", "content": content[:2000], "embeds": embeds,
            "allowed_mentions": {"parse": []}}


def _slack(body: dict[str, Any]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": summary(body)}}]
    alerts = body.get("alerts", [])
    for alert in alerts[:MAX_ITEMS]:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Device*\n{alert['device'] or '-'}"},
            {"type": "mrkdwn", "text": f"*Detector*\n{alert['detector']} "
                                       f"({alert['status']})"},
            {"type": "mrkdwn", "text": f"*Field*\n{alert.get('field') or '-'}"},
            {"type": "mrkdwn", "text": f"*Value*\n{_value(alert)}"},
            {"type": "mrkdwn", "text": f"*Expected*\n{alert.get('expected') or '-'}"},
            {"type": "mrkdwn", "text": f"*Time*\n{alert.get('ts') or '-'}"},
        ]})
    if len(alerts) > MAX_ITEMS:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"{len(alerts) - MAX_ITEMS} more alerts not shown"}]})
    if body.get("dashboard"):
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"<{body['dashboard']}|Open the dashboard>"}]})
    return {"text": summary(body), "blocks": blocks}
