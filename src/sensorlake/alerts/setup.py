"""Detectors, alerts and channels put together for the worker: the anomalies output and the
loops that run beside the pipeline (the notifier, each channel's delivery, the alert log)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from pyiceberg.catalog import Catalog

from sensorlake.alerts.channels import ChannelClient
from sensorlake.alerts.deliver import Delivery
from sensorlake.alerts.facts import AlertFacts, AlertSettings
from sensorlake.alerts.log import keep_log
from sensorlake.alerts.notify import Notifier
from sensorlake.alerts.store import AlertStore
from sensorlake.config import Config
from sensorlake.detect.detectors import Detector, build
from sensorlake.detect.output import AnomalyOutput
from sensorlake.faults import Faults
from sensorlake.pipeline.checkpoint import CheckpointStore
from sensorlake.stream.partitions import Position

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def dashboard_url(config: Config) -> str:
    if config.alerts.dashboard_url:
        return config.alerts.dashboard_url.rstrip("/")
    from sensorlake.devices.tls import public_host

    scheme = "https" if config.server.https else "http"
    return f"{scheme}://{public_host(config)}:{config.server.http_port}"


def alerting(config: Config, catalog: Catalog, checkpoints: CheckpointStore,
             start_at: Callable[[], Position], fault_points: Faults
             ) -> tuple[AnomalyOutput, list[Loop]]:
    alerts = config.alerts
    detectors: list[Detector] = [build(d) for d in config.detectors if d.enabled]
    settings = {d.name: AlertSettings(d.channel, d.severity, d.for_,
                                      alerts.keep_firing_for if d.keep_firing_for is None
                                      else d.keep_firing_for)
                for d in config.detectors if d.enabled}
    alerting_rules = [r for r in config.rules if r.enabled and r.alert]
    if alerting_rules:
        from sensorlake.detect.rule_alerts import RuleDetector
        from sensorlake.rules.evaluate import Evaluator, compile_rule

        evaluator = Evaluator()
        for rule in alerting_rules:
            detectors.append(RuleDetector(compile_rule(rule), evaluator))
            settings[rule.name] = AlertSettings(rule.alert, "warning", 0.0,
                                                alerts.keep_firing_for)
    facts = AlertFacts(settings)
    store = AlertStore.for_config(config)
    output = AnomalyOutput(detectors, facts, checkpoints, catalog, config.lake.namespace,
                           start_at, fault_points)
    notifier = Notifier(alerts, facts, store, dashboard_url(config), tick=output.tick)
    output.on_detection = notifier.wake.set
    loops: list[Loop] = [notifier.run]
    for channel in alerts.channels:
        loops.append(Delivery(ChannelClient(channel), store, notifier.sent[channel.name]).run)

    async def log_loop(stop: asyncio.Event) -> None:
        await keep_log(catalog, config.lake.namespace, store, stop)

    loops.append(log_loop)
    return output, loops
