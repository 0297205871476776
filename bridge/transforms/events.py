"""What the transforms tell the rest of the bridge: reports about labels, counts about lines.

Both channels carry only fixed vocabularies (`STEPS`, `DROP_REASONS`, the option names of
`TransformsConfig.LABEL_OPTIONS` as report kinds), never text a container chose, so they can
become metric labels; a report's message may quote a container's value, shortened and escaped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

# (kind, one-line message) -> reported once per container and kind by the caller
ReportError = Callable[[str, str], None]

# The per-line steps, as `TransformEvents.line_failed` names them.
STEPS: Final = ("multiline", "json", "priority", "rate_limit")
# Why extra fields were left off an entry, as `TransformEvents.fields_dropped` names them.
DROP_REASONS: Final = ("count", "bytes")


class TransformEvents(Protocol):
    """Counters the pipeline keeps for the transforms (Telemetry implements it)."""

    def line_failed(self, step: str) -> None:
        """A step raised on one record; the record went on as the step received it."""

    def fields_dropped(self, reason: str, count: int) -> None:
        """`count` fields a container produced were left off by a cap (`reason` in DROP_REASONS)."""


class NoEvents:
    """A TransformEvents that counts nothing, for callers that do not keep these counts."""

    def line_failed(self, step: str) -> None:
        pass

    def fields_dropped(self, reason: str, count: int) -> None:
        pass


NO_EVENTS: Final = NoEvents()


def shown(value: str, limit: int = 64) -> str:
    """A container's value for a report: escaped (no line breaks) and at most about `limit`."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} chars)"
