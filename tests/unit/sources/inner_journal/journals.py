"""Real journal files for the tests, written by systemd-journal-remote from export format.

journal-remote keeps every field it is given (trusted `_*` ones too) and appends to an
existing file, continuing its seqnum id and seqnums: enough to build, grow and rotate journals
without a journald.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT_ID = "23c38030e34c43a2966f07e9586574dd"
MACHINE_ID = "6504787f5ea3415483cafb9ed0d18600"
T0 = 1_796_199_365_000_000

needs_journal_remote = pytest.mark.skipif(
    not os.access(JOURNAL_REMOTE, os.X_OK) or shutil.which("true") is None,
    reason="systemd-journal-remote is not installed (make test installs it)",
)


def export(fields: Mapping[str, bytes | str]) -> bytes:
    out = []
    for name, value in fields.items():
        raw = value.encode() if isinstance(value, str) else value
        if b"\n" in raw:
            out.append(name.encode() + b"\n" + len(raw).to_bytes(8, "little") + raw + b"\n")
        else:
            out.append(name.encode() + b"=" + raw + b"\n")
    return b"".join(out) + b"\n"


def entry(
    i: int, message: str | bytes | None = None, **extra: bytes | str
) -> dict[str, bytes | str]:
    """Entry number i: realtime T0 + i, monotonic i, the test boot, `line i` by default."""
    fields: dict[str, bytes | str] = {
        "__REALTIME_TIMESTAMP": str(T0 + i),
        "__MONOTONIC_TIMESTAMP": str(i),
        "_BOOT_ID": BOOT_ID,
        "_MACHINE_ID": MACHINE_ID,
        "MESSAGE": f"line {i}" if message is None else message,
    }
    fields.update(extra)
    return fields


def write(path: Path, entries: Iterable[Mapping[str, bytes | str]], compress: bool = True) -> Path:
    """Appends `entries` to the journal file `path` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(export(e) for e in entries)
    subprocess.run(
        [JOURNAL_REMOTE, f"--compress={'yes' if compress else 'no'}", "-o", str(path), "-"],
        input=data,
        check=True,
        capture_output=True,
    )
    return path


def journal_dir(root: Path, base: str = "var/log/journal", machine: str = MACHINE_ID) -> Path:
    path = root / base / machine
    path.mkdir(parents=True, exist_ok=True)
    return path
