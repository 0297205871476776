"""Exact resume positions in a container's log, and the filter that applies one.

Why per stream: dockerd timestamps each line with its own clock read, in one copier goroutine per
stream, so within one stream the timestamps never decrease; across stdout and stderr the lines
can reach the log file in a different order than their timestamps. A single (timestamp, count)
cursor would lose or repeat lines at that seam; one per stream cannot.

A position is `(ts_ns, k)`: every line of that stream with a timestamp before `ts_ns` was
consumed, and so were the first `k` lines stamped exactly `ts_ns` (Docker's `since` is
inclusive, and lines -- the 16 KiB pieces of one long line, at least -- share timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.core.timestamps import NS_PER_SECOND

Position = tuple[int, int]

# How far a line may trail the newest line of the other stream on its way into dockerd's log
# file. Only used to bound how far back a resume reads for a stream that has been idle.
REORDER_GUARD_NS = 2 * NS_PER_SECOND


@dataclass
class Cursor:
    """Where to resume one container: per-stream positions above a floor.

    A *pinned* stream's position is exact: the stream holds a record that was read but not yet
    written (an open multiline record, pieces of a long line), so a resume must reach back to
    it however far the other stream has moved on. An unpinned position may be raised to
    `newest - guard` to bound how far back a resume reads for an idle stream.
    """

    floor_ns: int = 0  # nothing stamped before this is wanted (e.g. backlog=none at first run)
    streams: dict[int, Position] = field(default_factory=dict)
    pinned: frozenset[int] = frozenset()

    def since_ns(self, guard_ns: int = REORDER_GUARD_NS) -> int:
        """The inclusive `since` that returns every line not yet consumed."""
        if not self.streams:
            return self.floor_ns
        newest = max(ts for ts, _ in self.streams.values())
        bounds = [
            ts if stream in self.pinned else max(ts, newest - guard_ns)
            for stream, (ts, _) in self.streams.items()
        ]
        if len(self.streams) < 2:  # the other stream may start at any moment after `newest`
            bounds.append(newest - guard_ns)
        return max(self.floor_ns, min(bounds), 0)

    def merged(self, other: Cursor) -> Cursor:
        """The later of two cursors, stream by stream (a pin goes with the position chosen)."""
        streams = dict(self.streams)
        pinned = set(self.pinned)
        for stream, position in other.streams.items():
            if stream not in streams or position > streams[stream]:
                streams[stream] = position
                pinned.discard(stream)
            if stream in other.pinned and streams[stream] == position:
                pinned.add(stream)
        return Cursor(max(self.floor_ns, other.floor_ns), streams, frozenset(pinned))

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "floor_ns": self.floor_ns,
            "streams": {str(s): [ts, k] for s, (ts, k) in sorted(self.streams.items())},
        }
        if self.pinned:
            data["pinned"] = sorted(self.pinned)
        return data

    @classmethod
    def from_json(cls, data: object) -> Cursor:
        """Raises ValueError (or TypeError) for anything but a well-formed cursor."""
        if not isinstance(data, dict):
            raise ValueError("cursor must be an object")
        floor = _integer(data.get("floor_ns", 0))
        raw = data.get("streams", {})
        if not isinstance(raw, dict):
            raise ValueError("cursor streams must be an object")
        streams: dict[int, Position] = {}
        for s, p in raw.items():
            if not isinstance(p, list) or len(p) != 2:
                raise ValueError("a stream position must be [timestamp, count]")
            streams[_stream(s)] = (_integer(p[0]), _integer(p[1]))
        pinned_raw = data.get("pinned", [])
        if not isinstance(pinned_raw, list):
            raise ValueError("cursor pinned must be a list")
        pinned = frozenset(_stream(s) for s in pinned_raw)
        if not pinned <= streams.keys():
            raise ValueError("a pinned stream has no position")
        return cls(floor, streams, pinned)


# Positions are nanoseconds since the epoch: anything outside this range is damage, not time.
_MAX_NS = 1 << 63


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_NS:
        raise ValueError(f"not a position: {str(value)[:40]!r}")
    return value


def _stream(value: object) -> int:
    stream = int(str(value)) if str(value).isdigit() else -1
    if stream not in (1, 2):
        raise ValueError(f"not a stream: {str(value)[:40]!r}")
    return stream


def position_before(position: Position) -> Position:
    """The position of everything before the line at `position`."""
    ts, k = position
    return ts, k - 1


class CursorFilter:
    """Drops the lines a cursor says were consumed and numbers the rest.

    `admit(stream, ts_ns)` returns the line's `k` (its ordinal among the stream's lines with
    that timestamp) or None when the line was already consumed.
    """

    __slots__ = ("_floor", "_state", "gap_streams")

    def __init__(self, cursor: Cursor) -> None:
        self._floor = cursor.floor_ns
        # stream -> [last timestamp, lines seen at it, lines at it still to skip]
        self._state: dict[int, list[int]] = {s: [ts, k, k] for s, (ts, k) in cursor.streams.items()}
        self.gap_streams: set[int] = set()  # streams whose resume line was gone (rotated away)

    def admit(self, stream: int, ts_ns: int) -> int | None:
        state = self._state.get(stream)
        if state is None:
            if ts_ns < self._floor:
                return None
            self._state[stream] = [ts_ns, 1, 0]
            return 1
        last_ts, seen, to_skip = state
        if ts_ns < last_ts:
            return None
        if ts_ns == last_ts:
            if to_skip:
                state[2] = to_skip - 1
                return None
            state[1] = seen + 1
            return seen + 1
        if to_skip:  # the stream moved past the resume point before all of it was replayed
            self.gap_streams.add(stream)
        state[0], state[1], state[2] = ts_ns, 1, 0
        return 1

    def position(self, stream: int) -> Position | None:
        """How far the stream is consumed: lines still to skip were consumed before."""
        state = self._state.get(stream)
        return None if state is None else (state[0], state[1])

    def advanced(self, cursor: Cursor) -> Cursor:
        """`cursor` moved on to what this filter has seen (where a reopened stream goes on)."""
        streams = dict(cursor.streams)
        for stream, state in self._state.items():
            streams[stream] = (state[0], state[1])
        return Cursor(cursor.floor_ns, streams)
