"""Topic templates of the republish action: `alerts/${topic(2)}/cold`, as AWS IoT writes them.

A substitution is `${topic()}`, `${topic(N)}` (1-based level of the reading's topic),
`${clientid()}` or `${FIELD}` (a column of the result row).
"""

from __future__ import annotations

import re
from typing import Any

from sensorlake.errors import ConfigError

_SUBSTITUTION = re.compile(r"\$\{([^}]*)\}")
_KNOWN = re.compile(r"^\s*(?:topic\(\s*(\d*)\s*\)|clientid\(\s*\)|([A-Za-z_][A-Za-z0-9_]*))\s*$")


def check_template(rule: str, template: str) -> None:
    key = f"rules.{rule}.republish"
    for found in _SUBSTITUTION.finditer(template):
        if not _KNOWN.match(found.group(1)):
            raise ConfigError(key, f"cannot substitute ${{{found.group(1)}}}",
                              hint="use ${topic()}, ${topic(2)}, ${clientid()} or ${field}")
    bare = _SUBSTITUTION.sub("x", template)
    if not bare or "+" in bare or "#" in bare or bare.startswith("$"):
        raise ConfigError(key, f"{template!r} is not a topic to publish to",
                          hint="a republish topic has no wildcards (+, #) and is not empty")



def own_filter(template: str) -> str:
    """The topic filter of every topic `template` can produce: a level with a substitution is
    any level (`+`), and from `${topic()}` on, any levels (`#`)."""
    levels = []
    for level in template.split("/"):
        if "${" not in level:
            levels.append(level)
            continue
        whole = any(m.group(1).replace(" ", "") == "topic()"
                    for m in _SUBSTITUTION.finditer(level))
        levels.append("#" if whole else "+")
        if whole:
            break
    return "/".join(levels)


def render(template: str, topic: str, device: str | None, row: dict[str, Any]) -> str:
    """The topic one result row is republished to."""
    levels = topic.split("/")

    def substitute(found: re.Match[str]) -> str:
        known = _KNOWN.match(found.group(1))
        assert known is not None  # check_template refused anything else
        level, field = known.group(1), known.group(2)
        if field is not None:
            value = row.get(field)
            return "" if value is None else str(value)
        if level is None:
            return device or "n/a"
        if level == "":
            return topic
        n = int(level)
        return levels[n - 1] if 0 < n <= len(levels) else ""

    return _SUBSTITUTION.sub(substitute, template)
