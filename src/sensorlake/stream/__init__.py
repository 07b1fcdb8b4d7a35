"""The durable stream: NATS JetStream, its embedded server and the topic/subject conventions."""

from sensorlake.stream.connection import StreamClient
from sensorlake.stream.server import render_nats_config
from sensorlake.stream.subjects import subject_for_topic, topic_for_subject
from sensorlake.stream.supervisor import NatsSupervisor

__all__ = [
    "NatsSupervisor",
    "StreamClient",
    "render_nats_config",
    "subject_for_topic",
    "topic_for_subject",
]
