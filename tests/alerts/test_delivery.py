"""Each channel's delivery loop against a real local HTTP server: Discord's and Slack's rate
limits (429 with retry_after in seconds and in milliseconds, Retry-After), 5xx retried with
backoff and recorded, given up after the bound — every attempt a row of the alert log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sensorlake.alerts.channels import ChannelClient, mask_url
from sensorlake.alerts.deliver import Delivery
from sensorlake.alerts.store import AlertStore
from sensorlake.config import ChannelConfig
from tests.alerts.hooks import Answer, Hook


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook().start()
    yield server
    server.stop()


def body(n: int) -> dict[str, Any]:
    return {"status": "firing", "channel": "c", "group_key": f"c:g{n}", "group_labels": {},
            "alerts": [], "readings": n, "devices": 1}


def deliver(store: AlertStore, channel: ChannelConfig, count: int, hook: Hook,
            expect: int, timeout: float = 20.0) -> None:
    """Queue `count` notifications and run the loop until `expect` requests came."""
    for n in range(count):
        store.notify(f"c:g{n}", None, (channel.name, "firing", body(n)), 1000)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Delivery(ChannelClient(channel), store,
                                            asyncio.Event()).run(stop))
        await asyncio.to_thread(hook.wait, expect, None, timeout, False)
        await asyncio.sleep(0.2)  # the last attempt's log row
        stop.set()
        await task

    asyncio.run(run())


def log(store: AlertStore) -> list[tuple[str, int, int | None]]:
    return [(r["status"], r["attempts"], r["response_code"]) for r in store.log_after(0)]


def test_discord_429_in_seconds_on_the_versioned_url_is_waited_out(
        hook: Hook, tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'a.db'}", "t")
    channel = ChannelConfig(name="c", type="discord", url=hook.url("/api/webhooks/1/tok"))
    hook.answers = [Answer(429, {"message": "You are being rate limited.", "retry_after": 1.5,
                                 "global": False}, {"X-RateLimit-Reset-After": "1.5"})]
    deliver(store, channel, 1, hook, expect=2)
    first, second = hook.requests
    assert first.path == second.path == "/api/v10/webhooks/1/tok"  # the versioned API
    assert second.at - first.at >= 1.5
    assert log(store) == [("rate_limited", 1, 429), ("sent", 2, 200)]


def test_discord_429_in_milliseconds_on_an_unversioned_url_is_read_as_such(
        hook: Hook, tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'a.db'}", "t")
    channel = ChannelConfig(name="c", type="discord", url=hook.url("/relay/discord-hook"))
    hook.answers = [Answer(429, {"retry_after": 1200, "global": False})]
    deliver(store, channel, 1, hook, expect=2)
    first, second = hook.requests
    assert first.path == "/relay/discord-hook"
    assert 1.2 <= second.at - first.at < 5  # 1200 ms, not 1200 s
    assert log(store)[-1] == ("sent", 2, 200)


def test_discord_gets_at_most_5_requests_per_2_seconds(hook: Hook, tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'a.db'}", "t")
    channel = ChannelConfig(name="c", type="discord", url=hook.url("/api/webhooks/1/tok"))
    deliver(store, channel, 7, hook, expect=7)
    times = [r.at for r in hook.requests]
    assert len(times) == 7
    assert times[5] - times[0] >= 2.0
    assert times[6] - times[1] >= 2.0
    assert [r.body["content"].split(":")[0] for r in hook.requests] == ["[FIRING] "] * 7


def test_slack_429_retry_after_is_honoured(hook: Hook, tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'a.db'}", "t")
    channel = ChannelConfig(name="c", type="slack", url=hook.url("/services/T1/B2/secretsecret"))
    hook.answers = [Answer(429, None, {"Retry-After": "2"})]
    deliver(store, channel, 1, hook, expect=2)
    first, second = hook.requests
    assert second.at - first.at >= 2.0
    assert log(store) == [("rate_limited", 1, 429), ("sent", 2, 200)]


def test_a_failing_endpoint_is_retried_with_backoff_then_given_up_and_recorded(
        hook: Hook, tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'a.db'}", "t")
    channel = ChannelConfig(name="c", type="webhook", url=hook.url("/hook"), max_attempts=3)
    hook.answers = [Answer(500), Answer(503), Answer(500)]
    deliver(store, channel, 2, hook, expect=4)
    assert log(store) == [("retry", 1, 500), ("retry", 2, 503), ("gave_up", 3, 500),
                          ("sent", 1, 200)]
    gaps = [b.at - a.at for a, b in zip(hook.requests, hook.requests[1:], strict=False)]
    assert gaps[0] >= 0.5
    assert gaps[1] >= 1.0
    assert [r.body["readings"] for r in hook.requests] == [0, 0, 0, 1]  # in order
    assert store.waiting() == {}


def test_a_refused_notification_is_not_retried(hook: Hook, tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'a.db'}", "t")
    channel = ChannelConfig(name="c", type="webhook", url=hook.url("/hook"))
    hook.answers = [Answer(404, {"message": "Unknown Webhook"})]
    deliver(store, channel, 2, hook, expect=2)
    assert log(store) == [("refused", 1, 404), ("sent", 1, 200)]


def test_webhook_tokens_are_masked() -> None:
    assert mask_url("https://discord.com/api/webhooks/123/AbCdEfGhIjKl") == (
        "https://discord.com/api/webhooks/123/***")
    assert mask_url("https://hooks.slack.com/services/T0/B0/XyZ123456789") == (
        "https://hooks.slack.com/services/T0/B0/***")
    assert mask_url("https://user:pw@example.com/hook?token=abc") == (
        "https://user:***@example.com/hook?token=***")
