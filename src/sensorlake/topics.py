"""MQTT topic and topic-filter syntax, shared by the config (validation) and the stream layer."""

from __future__ import annotations

import re

BAD_TOPIC_CHARS = re.compile(r"[+#\s*>\x00]")


def check_topic_filter(topic_filter: str) -> None:
    """Raise ValueError unless it is an MQTT filter: levels, `+` a whole level, `#` last."""
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if level == "#" and i != len(levels) - 1:
            raise ValueError(f"{topic_filter!r}: '#' must be the last level")
        if level not in ("#", "+") and (not level or BAD_TOPIC_CHARS.search(level)):
            raise ValueError(
                f"{topic_filter!r}: levels must be non-empty, with '+' and '#' standing alone"
            )
    if topic_filter.startswith("$"):
        raise ValueError(f"{topic_filter!r}: topics starting with '$' are reserved")


def topic_matches(filters: list[str], topic: str) -> bool:
    levels = topic.split("/")
    for topic_filter in filters:
        parts = topic_filter.split("/")
        for i, part in enumerate(parts):
            if part == "#":
                return True
            if i >= len(levels) or (part != "+" and part != levels[i]):
                break
        else:
            if len(parts) == len(levels):
                return True
    return False
