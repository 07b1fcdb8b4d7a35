"""What every reading source promises the agent."""

from __future__ import annotations

from typing import Any, Protocol


class SourceFailed(Exception):
    """One sample could not be taken (a command that failed once, a sensor that hiccuped).

    The agent logs it, counts it and carries on: a device must not stop reporting because one
    sample went wrong. Anything that will fail every time is an `AgentError` at start instead.
    """


class Source(Protocol):
    """Takes one sample: one or more readings, each a JSON-able mapping of fields."""

    name: str

    def read(self) -> list[dict[str, Any]]: ...
