"""Where readings come from: one module per source behind the `Source` protocol.

Each is imported only when chosen, so a device without psutil or a Sense HAT can still run the
others.
"""

from __future__ import annotations

from enum import StrEnum

from sensorlake.agent.sources.base import Source, SourceFailed

__all__ = ["Source", "SourceFailed", "SourceKind", "open_source"]


class SourceKind(StrEnum):
    system = "system"
    sensehat = "sensehat"
    command = "command"


def open_source(kind: SourceKind, command: str | None = None,
                command_timeout: float = 30.0) -> Source:
    from sensorlake.errors import AgentError

    if kind is not SourceKind.command and command:
        raise AgentError("--command is for --source command",
                         hint="drop --command or pass --source command")
    if kind is SourceKind.system:
        from sensorlake.agent.sources.system import SystemSource

        return SystemSource()
    if kind is SourceKind.sensehat:
        from sensorlake.agent.sources.sensehat import SenseHatSource

        return SenseHatSource()
    from sensorlake.agent.sources.command import CommandSource

    return CommandSource(command or "", timeout=command_timeout)
