"""Exact resume positions in a container's log, and the filter that applies one.

Why per stream: dockerd and conmon stamp each line with a read of the wall clock, in one copier
per stream, so across stdout and stderr the lines can reach the log in a different order than
their timestamps. A single cursor would lose or repeat lines at that seam; one per stream cannot.

Within a stream timestamps normally never decrease, but the wall clock can step back (an NTP or
chrony step, a VM resumed from a snapshot, `date -s`). So a position is a tuple that keeps
increasing along the stream whatever the clock does, compared as Python compares tuples:

- `(hw, k)`: the line is stamped `hw`, the highest stamp in the stream so far, and is the k-th
  line stamped so (Docker's `since` is inclusive, and pieces of one long line share a stamp).
  Every line of the stream up to it is consumed. This is the form of nearly every line.
- `(hw, k, s, ts, k2)`: a line stamped `ts` below the high-water mark `hw`, inside the window of
  a clock step back: the k2-th line stamped `ts` after the s-th step back since the k-th line
  stamped `hw`. It sorts after the lines before it and before the next line that reaches `hw`.

Both forms are computed from the lines of the stream alone, counted from the line that set the
high-water mark, so any reader that reads the stream from before that line computes the same
positions (`CursorFilter`). A journal entry's `SYSLOG_TIMESTAMP` says `(ts, 1)`; an entry whose
position is anything else carries it (JOURNALD_BRIDGE_CURSOR), so only entries sharing a stamp
and the rare entries inside a step's window do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.core.timestamps import NS_PER_SECOND

# (hw, k) or (hw, k, s, ts, k2): see the module docstring.
Position = tuple[int, ...]

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
        """The inclusive `since` that returns every line not yet consumed.

        A position inside a step's window is exact like a pinned one: its lines to come may be
        stamped as low as its own stamp, and the line that set its high-water mark is above.
        """
        if not self.streams:
            return self.floor_ns
        newest = max(p[0] for p in self.streams.values())
        bounds = [
            stamp(p) if stream in self.pinned or in_step(p) else max(p[0], newest - guard_ns)
            for stream, p in self.streams.items()
        ]
        if len(self.streams) < 2:  # the other stream may start at any moment after `newest`
            bounds.append(newest - guard_ns)
        return max(self.floor_ns, min(bounds), 0)

    def marks(self) -> dict[int, int]:
        """Stream -> high-water stamp, for each stream whose position lies inside a step's
        window: a resume must read from before the line stamped so (its lines to come follow
        it, stamped lower), however far back that is."""
        return {stream: p[0] for stream, p in self.streams.items() if in_step(p)}

    def in_step(self) -> bool:
        """Whether a stream's position lies inside the window of a clock step back."""
        return any(in_step(p) for p in self.streams.values())

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
            "streams": {str(s): list(p) for s, p in sorted(self.streams.items())},
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
            if not isinstance(p, list) or len(p) not in (2, 5):
                raise ValueError("a stream position must be [timestamp, count] or a step's")
            streams[_stream(s)] = checked(tuple(_integer(v) for v in p))
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


def checked(position: tuple[int, ...]) -> Position:
    """`position` if it is well-formed (see the module docstring), else ValueError."""
    if len(position) == 2:
        return position
    if len(position) == 5 and position[2] >= 1 and position[3] < position[0]:
        return position
    raise ValueError(f"not a position: {str(position)[:80]!r}")


def stamp(position: Position) -> int:
    """The timestamp of the line at `position`."""
    return position[-2]


def in_step(position: Position) -> bool:
    return len(position) > 2


def position_before(position: Position) -> Position:
    """The position of everything before the line at `position`."""
    return (*position[:-1], position[-1] - 1)


class CursorFilter:
    """Drops the lines a cursor says were consumed and gives the rest their positions.

    `admit(stream, ts_ns)` returns the line's position, or None when the line was already
    consumed. A stream with a position is first *seeking*: the lines stamped below its
    high-water mark come before the line that set it, and are skipped. From the first line
    stamped at or above it, positions are computed line by line, and a line is admitted when
    its position is past the cursor's: from then on every line is, whatever its timestamp. A
    line stamped below the stream's high-water mark opens (or goes on in) a step's window;
    `steps` counts the steps back seen, `last_step_ns` says by how much the last one stepped.
    """

    __slots__ = ("_floor", "_state", "gap_streams", "last_step_ns", "steps")

    def __init__(self, cursor: Cursor) -> None:
        self._floor = cursor.floor_ns
        self._state: dict[int, _Stream] = {s: _Stream.resumed(p) for s, p in cursor.streams.items()}
        self.gap_streams: set[int] = set()  # streams whose resume line was gone (rotated away)
        self.steps = 0
        self.last_step_ns = 0

    def admit(self, stream: int, ts_ns: int) -> Position | None:
        state = self._state.get(stream)
        if state is None:
            if ts_ns < self._floor:
                return None
            self._state[stream] = state = _Stream(ts_ns, 0)
        elif state.seeking:
            if ts_ns < state.hw:
                return None
            state.seeking = False
            if ts_ns > state.hw:  # the line that set the mark is gone (rotated away)
                state.hw, state.hw_k = ts_ns, 0
        # The step machine, once per line: kept inline.
        hw = state.hw
        stepped = 0
        if ts_ns > hw:
            state.hw, state.hw_k, state.step = ts_ns, 1, 0
            position: Position = (ts_ns, 1)
        elif ts_ns == hw:
            state.hw_k += 1
            state.step = 0
            position = (hw, state.hw_k)
        else:
            if state.step == 0 or ts_ns < state.ts:
                stepped = (hw if state.step == 0 else state.ts) - ts_ns
                state.step += 1
                state.ts, state.k = ts_ns, 1
            elif ts_ns == state.ts:
                state.k += 1
            else:
                state.ts, state.k = ts_ns, 1
            position = (hw, state.hw_k, state.step, ts_ns, state.k)
        after = state.after
        if after is not None:
            if position <= after:
                state.last = position
                return None
            if after[-1] and state.last != after:  # the resume line itself was never seen
                self.gap_streams.add(stream)
            state.after = None
        if stepped:
            self.steps += 1
            self.last_step_ns = stepped
        state.last = position
        return position

    def position(self, stream: int) -> Position | None:
        """How far the stream is consumed: lines still to skip were consumed before."""
        state = self._state.get(stream)
        if state is None:
            return None
        return state.after if state.after is not None else state.last

    def advanced(self, cursor: Cursor) -> Cursor:
        """`cursor` moved on to what this filter has seen (where a reopened stream goes on)."""
        streams = dict(cursor.streams)
        for stream in self._state:
            position = self.position(stream)
            if position is not None:
                streams[stream] = position
        return Cursor(cursor.floor_ns, streams)


class _Stream:
    """One stream's place in the step machine (see CursorFilter)."""

    __slots__ = ("after", "hw", "hw_k", "k", "last", "seeking", "step", "ts")

    def __init__(self, hw: int, hw_k: int) -> None:
        self.hw = hw  # the highest stamp so far
        self.hw_k = hw_k  # lines stamped `hw` so far
        self.step = 0  # steps back since the last line stamped `hw` (0: not in a window)
        self.ts = 0  # in a window: the stamp of the last line, and lines at it
        self.k = 0
        self.seeking = False
        self.after: Position | None = None  # the resume position, until a line passes it
        self.last: Position | None = None

    @classmethod
    def resumed(cls, position: Position) -> _Stream:
        state = cls(position[0], 0)
        state.seeking = True
        state.after = position
        return state
