"""Multi-line records (stack traces) merged into one entry. Pure and I/O-free.

A line matching `start` opens a record; while one is open, lines matching `continuation` join
it; any other line closes it and passes alone (or opens the next record, if it matches
`start`). An open record is also closed when `flush_after` seconds pass without a new line,
or when adding a line would take it past `max_bytes`. stdout and stderr merge separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bridge.record import Record

PRESETS: dict[str, tuple[str, str]] = {
    "python": (
        r"^Traceback \(most recent call last\):$",
        r"^(\s|$|[\w.]*(Error|Exception|Warning|Exit|Interrupt|StopIteration)\b|"
        r"During handling of the above exception|The above exception was the direct cause)",
    ),
    "java": (
        r"^([\w$]+\.)*[\w$]*(Exception|Error|Throwable)(: .*)?$|^Exception in thread \"",
        r"^(\s+at |\s+\.\.\. \d+ (more|common frames omitted)|Caused by: |\s+Suppressed: )",
    ),
}


@dataclass
class _Open:
    records: list[Record] = field(default_factory=list)
    size: int = 0
    deadline: float = 0.0


class MultilineMerger:
    def __init__(self, start: str, continuation: str, flush_after: float, max_bytes: int) -> None:
        self._start = re.compile(start.encode())
        self._continuation = re.compile(continuation.encode())
        self._flush_after = flush_after
        self._max_bytes = max_bytes
        self._open: dict[int, _Open] = {}
        self.merged_records = 0

    @classmethod
    def preset(cls, name: str, flush_after: float, max_bytes: int) -> MultilineMerger:
        start, continuation = PRESETS[name]
        return cls(start, continuation, flush_after, max_bytes)

    def push(self, record: Record, now: float) -> list[Record]:
        if record.partial is not None:  # pieces of an overlong line are never merged further
            return [*self._close(record.stream), record]
        current = self._open.get(record.stream)
        message = record.message
        if (
            current is not None
            and self._continuation.match(message)
            and current.size + 1 + len(message) <= self._max_bytes
        ):
            current.records.append(record)
            current.size += 1 + len(message)
            current.deadline = now + self._flush_after
            return []
        out = self._close(record.stream)
        if self._start.match(message):
            self._open[record.stream] = _Open([record], len(message), now + self._flush_after)
        else:
            out.append(record)
        return out

    def next_deadline(self) -> float | None:
        return min((o.deadline for o in self._open.values()), default=None)

    def flush_due(self, now: float) -> list[Record]:
        out: list[Record] = []
        for stream in [s for s, o in self._open.items() if o.deadline <= now]:
            out.extend(self._close(stream))
        return out

    def flush(self) -> list[Record]:
        out: list[Record] = []
        for stream in list(self._open):
            out.extend(self._close(stream))
        return out

    def _close(self, stream: int) -> list[Record]:
        current = self._open.pop(stream, None)
        if current is None:
            return []
        records = current.records
        if len(records) == 1:
            return records
        self.merged_records += 1
        first, last = records[0], records[-1]
        return [
            Record(
                stream,
                b"\n".join(r.message for r in records),
                first.timestamp,
                first.first,
                last.last,
            )
        ]
