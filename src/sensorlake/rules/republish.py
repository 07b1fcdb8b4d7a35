"""Topic templates of the republish action: `alerts/${topic(2)}/cold`, as AWS IoT writes them.

A substitution is `${topic()}`, `${topic(N)}` (1-based level of the reading's topic),
`${clientid()}` or `${FIELD}` (a column of the result row).
"""

from __future__ import annotations

import re

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

