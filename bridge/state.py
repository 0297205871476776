"""Resume points on disk: one small JSON file, replaced atomically.

Write a temporary file, fsync it, rename it over the old one, fsync the directory: after a crash
the file is the old version or the new one, never a torn mix. A damaged file is moved aside
with one log line and the bridge falls back on the journal's own record (see recovery.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.cursor import Cursor

log = logging.getLogger(__name__)

STATE_FILE = "positions.json"
_VERSION = 1


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
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            raise ValueError("not a version-1 state file")
        containers_raw = data.get("containers", {})
        if not isinstance(containers_raw, dict):
            raise ValueError("containers must be an object")
        containers = {
            str(cid): ContainerState(Cursor.from_json(raw), str(raw.get("finished_at", "")))
            for cid, raw in containers_raw.items()
        }
        return cls(int(data["first_run_ns"]), containers)


class StateStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self._last_written: dict[str, object] | None = None

    def load(self) -> State | None:
        """The saved state, or None on this host's first run (or when the file was unusable)."""
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            state = State.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_suffix(f".damaged-{int(time.time())}")
            os.replace(self.path, aside)
            log.error(
                "state file %s is damaged (%s); moved to %s, resuming from the journal",
                self.path,
                exc,
                aside,
            )
            return None
        self._last_written = state.to_json()
        return state

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
