"""Resume points on disk: one small JSON file, replaced atomically.

Write a temporary file, fsync it, rename it over the old one, fsync the directory: after a crash
the file is the old version or the new one, never a torn mix.

A damaged file (unreadable, not JSON, out-of-range numbers, owned by another user) is moved
aside with one log line, and the bridge falls back on the journal's own record (the sink's
read-back).
It never skips lines because of that: a damaged file gives a state whose first run is unknown
(0), so no container counts as older than the bridge and none loses its backlog to `now`.
A file from a newer version is not damage but a downgrade, refused with `StateError`.

Versions: 1 had per-stream positions; 2 adds pinned streams (see cursor.py). Version 1 files
are read as they are: everything they say means the same in version 2.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.core.cursor import Cursor

log = logging.getLogger(__name__)

STATE_FILE = "positions.json"
_VERSION = 2
_READABLE_VERSIONS = (1, 2)


class StateError(Exception):
    """A state file this version must not use or replace; str() is the one-line reason."""


@dataclass
class ContainerState:
    cursor: Cursor
    finished_at: str = ""  # State.FinishedAt of a stopped container read to its end


@dataclass
class State:
    first_run_ns: int
    containers: dict[str, ContainerState] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "version": _VERSION,
            "first_run_ns": self.first_run_ns,
            "containers": {
                cid: {**c.cursor.to_json(), "finished_at": c.finished_at}
                for cid, c in sorted(self.containers.items())
            },
        }

    @classmethod
    def from_json(cls, data: object) -> State:
        """Raises ValueError or TypeError for a damaged state, StateError for a newer one."""
        if not isinstance(data, dict):
            raise ValueError("not a state file")
        version = data.get("version")
        if isinstance(version, int) and version > _VERSION:
            raise StateError(
                f"state file version {version} is newer than this journald-bridge "
                f"understands ({_VERSION}): refusing to downgrade it"
            )
        if version not in _READABLE_VERSIONS:
            raise ValueError(f"unknown state file version {str(version)[:20]!r}")
        containers_raw = data.get("containers", {})
        if not isinstance(containers_raw, dict):
            raise ValueError("containers must be an object")
        containers: dict[str, ContainerState] = {}
        for cid, raw in containers_raw.items():
            if not isinstance(raw, dict):
                raise ValueError("a container entry must be an object")
            finished_at = raw.get("finished_at", "")
            if not isinstance(finished_at, str):
                raise ValueError("finished_at must be a string")
            containers[str(cid)] = ContainerState(Cursor.from_json(raw), finished_at)
        first_run = data.get("first_run_ns")
        if isinstance(first_run, bool) or not isinstance(first_run, int) or first_run < 0:
            raise ValueError(f"first_run_ns is not a time: {str(first_run)[:40]!r}")
        return cls(first_run, containers)


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
            json.dump(data, f, separators=(",", ":"))
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
