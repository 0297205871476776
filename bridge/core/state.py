"""Resume points on disk: one small JSON file, replaced atomically.

Write a temporary file, fsync it, rename it over the old one, fsync the directory: after a crash
the file is the old version or the new one, never a torn mix.

A damaged file (unreadable, not JSON, out-of-range numbers, owned by another user) is moved
aside with one log line, and the bridge falls back on the journal's own record (the sink's
read-back).
It never skips lines because of that: a damaged file gives a state whose first run is unknown
(0), so no container counts as older than the bridge and none loses its backlog to `now`.
A file from a newer version is not damage but a downgrade, refused with `StateError`.

Versions: 1 had per-stream positions; 2 adds pinned streams (see cursor.py); 3 keys containers
by engine (`engines.<name>.<container id>`), records when each engine was first read, and keeps
an inner journal's position per container; 4 allows a stream's position inside the window of
a clock step back (`[hw, k, s, ts, k2]`, core/cursor.py), which a version 3 bridge would take
for damage and set aside. Older files are read as they are (every position they hold means the
same in version 4) and written back as 4: their containers are the `docker` engine's, whose
first run is the bridge's.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.core.cursor import Cursor

log = logging.getLogger(__name__)

STATE_FILE = "positions.json"
_VERSION = 4
_READABLE_VERSIONS = (1, 2, 3, 4)
DEFAULT_ENGINE = "docker"  # the engine of entries written before there were several


class StateError(Exception):
    """A state file this version must not use or replace; str() is the one-line reason."""


@dataclass
class ContainerState:
    cursor: Cursor
    finished_at: str = ""  # State.FinishedAt of a stopped container read to its end
    inner: dict[str, object] | None = None  # the inner journal's position (inner_journal)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {**self.cursor.to_json(), "finished_at": self.finished_at}
        if self.inner is not None:
            data["inner"] = self.inner
        return data

    @classmethod
    def from_json(cls, raw: object) -> ContainerState:
        if not isinstance(raw, dict):
            raise ValueError("a container entry must be an object")
        finished_at = raw.get("finished_at", "")
        if not isinstance(finished_at, str):
            raise ValueError("finished_at must be a string")
        inner = raw.get("inner")
        if inner is not None and not isinstance(inner, dict):
            raise ValueError("inner must be an object")
        return cls(Cursor.from_json(raw), finished_at, inner)


# An engine's containers, by container id.
EngineContainers = dict[str, ContainerState]


@dataclass
class State:
    first_run_ns: int
    engines: dict[str, EngineContainers] = field(default_factory=dict)
    # When each engine was first read: its containers created before then are "existing" ones
    # (forward.backlog); the default engine's is the bridge's own first run.
    engine_first_run_ns: dict[str, int] = field(default_factory=dict)

    def containers(self, engine: str) -> EngineContainers:
        """The engine's containers (created empty for a new engine). In a running bridge only
        `ResumePoints` changes them."""
        return self.engines.setdefault(engine, {})

    def points(self, engine: str, now_ns: int) -> ResumePoints:
        """The engine's resume points: the one object that reads and changes them."""
        return ResumePoints(self, engine, self.first_run_of(engine, now_ns))

    def first_run_of(self, engine: str, now_ns: int) -> int:
        """When the engine was first read; an engine new to this state is first read now."""
        if engine == DEFAULT_ENGINE and engine not in self.engine_first_run_ns:
            return self.first_run_ns
        return self.engine_first_run_ns.setdefault(engine, now_ns)

    def to_json(self) -> dict[str, object]:
        return {
            "version": _VERSION,
            "first_run_ns": self.first_run_ns,
            "engine_first_run_ns": dict(sorted(self.engine_first_run_ns.items())),
            "engines": {
                name: {cid: c.to_json() for cid, c in sorted(containers.items())}
                for name, containers in sorted(self.engines.items())
            },
        }

    @classmethod
    def from_json(cls, data: object) -> State:
        """Raises ValueError or TypeError for a damaged state, StateError for a newer one."""
        if not isinstance(data, dict):
            raise ValueError("not a state file")
        version = data.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version > _VERSION:
            raise StateError(
                f"state file version {version} is newer than this journald-bridge "
                f"understands ({_VERSION}): refusing to downgrade it"
            )
        if version not in _READABLE_VERSIONS:
            raise ValueError(f"unknown state file version {str(version)[:20]!r}")
        if version >= 3:
            engines_raw = _object(data.get("engines", {}), "engines")
        else:
            engines_raw = {DEFAULT_ENGINE: data.get("containers", {})}
        engines: dict[str, EngineContainers] = {}
        for name, containers_raw in engines_raw.items():
            containers = _object(containers_raw, "an engine's containers")
            engines[str(name)] = {
                str(cid): ContainerState.from_json(raw) for cid, raw in containers.items()
            }
        first_runs = _object(data.get("engine_first_run_ns", {}), "engine_first_run_ns")
        first_run = _time(data.get("first_run_ns"), "first_run_ns")
        return cls(
            first_run,
            engines,
            {str(k): _time(v, "engine_first_run_ns") for k, v in first_runs.items()},
        )


class ResumePoints:
    """One engine's saved positions, and the only writer of them while the bridge runs.

    The handle factory reads a container's saved position when it first sees the container; the
    start-up listing prunes the containers removed while the bridge was down; a removal forgets
    one; the saver replaces them all with what was committed since. Each of these is one call
    here, under one lock, so no caller keeps (or edits) the engine's dict.
    """

    def __init__(self, state: State, engine: str, first_run_ns: int) -> None:
        self._state = state
        self.engine = engine
        # Containers created before the engine was first read are "existing" ones (backlog).
        self.first_run_ns = first_run_ns
        self._lock = threading.Lock()

    def saved(self, container_id: str) -> ContainerState | None:
        with self._lock:
            return self._state.containers(self.engine).get(container_id)

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._state.containers(self.engine).pop(container_id, None)

    def prune(self, present: set[str]) -> list[str]:
        """Forgets every container not `present`; returns their ids."""
        with self._lock:
            saved = self._state.containers(self.engine)
            gone = sorted(set(saved) - present)
            for container_id in gone:
                del saved[container_id]
        return gone

    def replace(self, containers: EngineContainers) -> None:
        """What the engine's containers committed, as of now, for the next save."""
        with self._lock:
            self._state.engines[self.engine] = dict(containers)


def _object(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object")
    return value


def _time(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} is not a time: {str(value)[:40]!r}")
    return value


# Far beyond what any host's containers need (a few hundred bytes each); a bigger file is not ours.
_MAX_STATE_BYTES = 256 << 20


class StateStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self._last_written: dict[str, object] | None = None

    def load(self) -> State | None:
        """The saved state; None on this host's first run. Raises StateError on a downgrade.

        A damaged file gives `State(first_run_ns=0)`: see the module's docstring."""
        try:
            with open(self.path, "rb") as f:
                owner = os.fstat(f.fileno()).st_uid
                raw = f.read(_MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._set_aside(f"cannot read it: {exc.strerror}")
            return State(first_run_ns=0)
        try:
            if owner != os.geteuid():
                raise ValueError(f"owned by uid {owner}, not by this process")
            if len(raw) > _MAX_STATE_BYTES:
                raise ValueError("larger than any state this bridge writes")
            state = State.from_json(json.loads(raw.decode()))
        except StateError:
            raise
        except (ValueError, TypeError, RecursionError) as exc:  # UnicodeDecodeError is one
            self._set_aside(str(exc)[:200])
            return State(first_run_ns=0)
        self._last_written = state.to_json()
        return state

    def _set_aside(self, reason: str) -> None:
        aside = self.path.with_suffix(f".damaged-{time.time_ns()}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            where = f"left in place ({exc.strerror})"
        else:
            where = f"moved to {aside}"
        log.error(
            "state file %s is damaged (%s); %s, resuming from the journal", self.path, reason, where
        )

    def save(self, state: State) -> bool:
        """Writes the state if it changed; returns whether it wrote."""
        data = state.to_json()
        if data == self._last_written:
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            # dumps, not dump: dump encodes piecewise in pure Python, dumps in C at once
            f.write(json.dumps(data, separators=(",", ":")))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._last_written = data
        return True
