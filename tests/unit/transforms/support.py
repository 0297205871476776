"""Helpers shared by the transform tests."""

from __future__ import annotations

from bridge.config import TransformsConfig
from bridge.core.record import Record
from bridge.transforms import TransformChain, build_chain

TS = b"2026-11-28T00:13:57.123456789Z"


class Events:
    """A TransformEvents that remembers what it was told."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.dropped: list[tuple[str, int]] = []

    def line_failed(self, step: str) -> None:
        self.failed.append(step)

    def fields_dropped(self, reason: str, count: int) -> None:
        self.dropped.append((reason, count))


def rec(message: bytes, n: int = 1, stream: int = 1) -> Record:
    return Record(stream, message, TS, (n, 1), (n, 1))


def build(
    config: TransformsConfig | None = None, labels: dict[str, str] | None = None
) -> tuple[TransformChain | None, list[tuple[str, str]], Events]:
    errors: list[tuple[str, str]] = []
    events = Events()
    chain = build_chain(
        config or TransformsConfig(),
        labels or {},
        1 << 20,
        lambda: "web",
        lambda kind, message: errors.append((kind, message)),
        events,
    )
    return chain, errors, events


def label(**options: str) -> dict[str, str]:
    return {f"journald-bridge.{k}": v for k, v in options.items()}
