"""MQTT topics and NATS subjects, converted the way the NATS MQTT listener converts them.

A device publishing to `farm/gh-01/telemetry` produces subject `farm.gh-01.telemetry` in the
devices account, which the sensorlake account sees as `<prefix>.farm.gh-01.telemetry`.
"""

from __future__ import annotations

from sensorlake.errors import IngestError
from sensorlake.topics import BAD_TOPIC_CHARS


def subject_for_topic(prefix: str, topic: str) -> str:
    """Subject under which a reading sent to `topic` is stored; rejects what MQTT would reject."""
    if not topic or len(topic) > 1024 or BAD_TOPIC_CHARS.search(topic):
        raise IngestError(
            f"topic {topic!r} is not a publishable topic",
            hint="use levels separated by '/', without spaces or the wildcards + and #, "
            "e.g. ?topic=farm/gh-01/telemetry",
        )
    levels = topic.split("/")
    if any(level == "" for level in levels) or topic.startswith("$"):
        raise IngestError(
            f"topic {topic!r} has an empty level or starts with '$'",
            hint="write levels like farm/gh-01/telemetry",
        )
    return ".".join([prefix, *(level.replace(".", "//") for level in levels)])


def topic_for_subject(prefix: str, subject: str) -> str:
    body = subject[len(prefix) + 1 :] if subject.startswith(prefix + ".") else subject
    return "/".join(token.replace("//", ".") for token in body.split("."))


_INTERNAL = ("$", "_INBOX.", "_R_.")


def is_device_subject(prefix: str, subject: str) -> bool:
    """False for what a capture of any topic imports besides readings: the MQTT listener's
    bookkeeping ($MQTT), JetStream's API and advisories ($JS), and replies (_INBOX, and _R_ for
    the service replies by which sensorlake reads the listener's stream)."""
    if not subject.startswith(prefix + "."):
        return False
    return not subject[len(prefix) + 1 :].startswith(_INTERNAL)


BOOKKEEPING_PREFIX = "_mqtt_bookkeeping"
"""Where the stream files the MQTT listener's own messages ($MQTT.msgs copies and JetStream acks
that a capture of any topic also imports): outside the subject prefix, so neither the lake writer
nor a fresh query is ever sent them."""

WRITER_STATUS_SUBJECT = "_sensorlake.writer.status"
"""Request/reply subject on which the lake writer reports readiness and its metrics. Outside the
subject prefix, so the stream never captures it."""


def subject_for_filter(topic_filter: str) -> str:
    """`farm/+/telemetry` → `farm.*.telemetry`, `farm/#` → `farm.>`, `#` → `>`."""
    return ".".join(
        ">" if level == "#" else "*" if level == "+" else level.replace(".", "//")
        for level in topic_filter.split("/")
    )
