"""One container's transforms, run in order: multiline -> rate limit -> JSON -> priority.

Invariants:

- `process` and `tick` never raise because of a record. A step that raises on one record
  passes it on as the step received it (fields restored), counts `line_failed(step)`, and the
  chain goes on with the next record; a merger that fails hands back the lines it held for that
  stream, unmerged and in order, before the record.
- The rate limit runs on merged records (a stack trace is one line) and before the JSON parser,
  so a line it drops costs no parsing; records dropped by then (`record.dropped`) skip JSON and
  priority detection. The limiter sees every record, dropped or not, in order.
- No line is lost or reordered within a stream; a dropped record still leaves with its
  position (the sink counts it as consumed).
- `now` comes from the caller (a monotonic clock); nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge.core.cursor import Position
from bridge.core.record import Record
from bridge.transforms.events import TransformEvents
from bridge.transforms.multiline import MultilineMerger
from bridge.transforms.priority import PriorityDetector
from bridge.transforms.ratelimit import RateLimiter
from bridge.transforms.structured import JsonParser

# A per-line step: it may change the record in place; it returns the record to pass on.
_Step = Callable[[Record, float], Record]


@dataclass
class TransformChain:
    multiline: MultilineMerger | None
    json: JsonParser | None
    priority: PriorityDetector | None
    rate_limit: RateLimiter | None
    container_name: Callable[[], str]
    events: TransformEvents

    def __post_init__(self) -> None:
        # (step name, apply, skips records already dropped), in the order they run; fixed here,
        # so the steps are set at construction (build_chain) and not swapped afterwards.
        steps: list[tuple[str, _Step, bool]] = []
        if self.rate_limit is not None:
            steps.append(("rate_limit", self.rate_limit.apply, False))
        if self.json is not None:
            parse = self.json.apply
            steps.append(("json", lambda record, _now: parse(record), True))
        if self.priority is not None:
            detect = self.priority.apply
            steps.append(("priority", lambda record, _now: detect(record), True))
        self._steps = steps

    def process(self, records: list[Record], now: float) -> list[Record]:
        if self.multiline is not None:
            records = self._merge(records, now)
        return self._per_line(records, now) if self._steps else records

    def tick(self, now: float, *, final: bool = False) -> list[Record]:
        """Records that time (or the end of the stream, `final`) releases."""
        out: list[Record] = []
        merger = self.multiline
        if merger is not None:
            for stream in merger.streams() if final else merger.due(now):
                out.extend(self._close(merger, stream))
            out = self._per_line(out, now)
        if self.rate_limit is not None:
            try:
                notice = self.rate_limit.notice(now, self.container_name(), force=final)
            except Exception:
                self.events.line_failed("rate_limit")
                notice = None
            if notice is not None:
                out.append(notice)
        return out

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (
                self.multiline.next_deadline() if self.multiline else None,
                self.rate_limit.next_deadline() if self.rate_limit else None,
            )
            if d is not None
        ]
        return min(deadlines, default=None)

    def take_merged_count(self) -> int:
        if self.multiline is None:
            return 0
        count, self.multiline.merged_records = self.multiline.merged_records, 0
        return count

    @property
    def held_bytes(self) -> int:
        """Memory held by open multiline records (`footprint` of the lines they hold)."""
        return self.multiline.held_bytes if self.multiline is not None else 0

    def held_first(self) -> dict[int, Position]:
        """Per stream, the position of the first line held in an open record; {} when none."""
        return self.multiline.held_first() if self.multiline is not None else {}

    def _merge(self, records: list[Record], now: float) -> list[Record]:
        merger = self.multiline
        assert merger is not None
        out: list[Record] = []
        for record in records:
            try:
                out.extend(merger.push(record, now))
            except Exception:
                self.events.line_failed("multiline")
                out.extend(merger.release(record.stream))
                out.append(record)
        return out

    def _close(self, merger: MultilineMerger, stream: int) -> list[Record]:
        try:
            return merger.close(stream)
        except Exception:
            self.events.line_failed("multiline")
            return merger.release(stream)

    def _per_line(self, records: list[Record], now: float) -> list[Record]:
        out: list[Record] = []
        for record in records:
            for name, step, skips_dropped in self._steps:
                if skips_dropped and record.dropped is not None:
                    continue
                saved = (record.message, record.priority, record.extra_fields, record.dropped)
                try:
                    record = step(record, now)
                except Exception:
                    record.message, record.priority, record.extra_fields, record.dropped = saved
                    self.events.line_failed(name)
            out.append(record)
        return out
