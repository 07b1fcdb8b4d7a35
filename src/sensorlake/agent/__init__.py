"""`sensorlake agent`: runs on the device, publishes real readings, stores and forwards.

A source (the host itself, a Sense HAT, or any command printing JSON) is sampled on a schedule;
every reading goes through a durable local queue and leaves it only once the broker has
acknowledged it (MQTT QoS 1), so an outage costs nothing but delay, up to the queue's bound.
"""

from __future__ import annotations

from sensorlake.agent.link import Broker, Bundle, Link, default_name, read_bundle
from sensorlake.agent.queue import QueueStatus, ReadingQueue
from sensorlake.agent.run import Agent, Schedule, Stats
from sensorlake.agent.sources import Source, SourceFailed, SourceKind, open_source

__all__ = [
    "Agent",
    "Broker",
    "Bundle",
    "Link",
    "QueueStatus",
    "ReadingQueue",
    "Schedule",
    "Source",
    "SourceFailed",
    "SourceKind",
    "Stats",
    "default_name",
    "open_source",
    "read_bundle",
]
