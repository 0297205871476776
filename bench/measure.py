"""Measuring for `make bench`: when entries reach the journal, CPU per process, the bridge process.

Kept apart from the scenarios in run.py; nothing here knows what a scenario does.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from systemd import journal

BRIDGE = str(Path(sys.executable).parent / "journald-bridge")
LABEL = "journald-bridge-bench"  # the label of every container the bench starts
IMAGE = "bridge-test/busybox:latest"  # the image of every container the bench starts


def wait_for_messages(messages: list[str], timeout: float) -> float:
    """Waits until every message is in the journal; returns when journald received the last one.

    The time comes from the entries themselves (__REALTIME_TIMESTAMP, wall clock), so the
    search can be unhurried: a reader spinning on every journal change took a good part of a
    core away from journald and the bridge while they were being measured.
    """
    reader = journal.Reader()
    missing = set(messages)
    received = 0.0
    deadline = time.monotonic() + timeout
    try:
        while True:
            for message in list(missing):
                reader.flush_matches()
                reader.add_match(MESSAGE=message)
                reader.seek_head()
                entry = reader.get_next()
                if entry:
                    missing.discard(message)
                    received = max(received, entry["__REALTIME_TIMESTAMP"].timestamp())
            if not missing:
                return received
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} sentinels missing after {timeout} s")
            time.sleep(0.2)
            reader.wait(0)  # takes in what changed (new entries, rotated files) without waiting
    finally:
        reader.close()


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of Docker's RFC3339Nano UTC time ("...T06:04:38.0144971Z")."""
    base, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.datetime.fromisoformat(base + "+00:00").timestamp()
    return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])


def received_ns(entry: dict[str, Any]) -> int:
    """When journald received an entry (its __REALTIME_TIMESTAMP, microseconds)."""
    stamp: datetime.datetime = entry["__REALTIME_TIMESTAMP"]
    return int(stamp.timestamp() * 1_000_000) * 1000


def percentiles(values_ms: list[float]) -> dict[str, float]:
    """p50, p99 (nearest rank: with fewer than 100 values it is the maximum) and max, in ms."""
    ordered = sorted(values_ms)
    if not ordered:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    return {
        "p50": round(ordered[len(ordered) // 2], 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max": round(ordered[-1], 1),
        "n": len(ordered),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(name: str) -> int:
    found = subprocess.run(["pgrep", "-xo", name], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else 0


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


class CpuMeter:
    """Where a scenario's CPU went: each process in % of one core, the machine in % busy.

    A process's figure counts all its threads, ended ones included: journald's can pass 100%
    because it fsyncs archived journal files in "journal-offline" threads beside its main one.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self._start: dict[str, float] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)
        self._t0 = 0.0
        self._used: dict[str, float] | None = None
        self.seconds: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine = machine_busy_seconds()
        self._t0 = time.monotonic()
        self._used = None

    def stop(self) -> dict[str, float]:
        """The figures from start() until the first call (later calls return the same)."""
        if self._used is not None:
            return self._used
        elapsed = time.monotonic() - self._t0
        self.seconds = {
            name: cpu_seconds(pid) - self._start[name] for name, pid in self.pids.items()
        }
        out = {name: round(used / elapsed * 100, 1) for name, used in self.seconds.items()}
        busy, total = machine_busy_seconds()
        out["machine_busy"] = round(
            (busy - self._machine[0]) / max(total - self._machine[1], 1e-9) * 100, 1
        )
        self._used = out
        return out

    def per_line(self, lines: int) -> dict[str, float]:
        """Microseconds of CPU each process spent per line."""
        return {name: round(used / lines * 1e6, 1) for name, used in self.seconds.items()}


def median_each(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(d[key] for d in dicts) for key in dicts[0]}


def cpu_text(cpu: dict[str, float]) -> str:
    parts = [f"{name} {value:.0f}%" for name, value in cpu.items() if name != "machine_busy"]
    return ", ".join(parts) + f"; machine {cpu.get('machine_busy', 0):.0f}% busy"


def per_line_text(per_line: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in per_line.items() if value >= 0.05)


class BridgeProcess:
    """The bridge as a real process, forwarding only the containers labelled for this bench run.

    `source` is its `docker.source` ("auto", "files" or "api"): which path reads the lines.
    """

    def __init__(self, workdir: Path, label: str, source: str = "auto") -> None:
        self.port = _free_port()
        self.config = workdir / "bridge.toml"
        self.config.write_text(
            f'[docker]\nsource = "{source}"\n'
            f'[state]\ndirectory = "{workdir / "state"}"\n'
            f'[filter]\ninclude_labels = ["{LABEL}={label}"]\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.port}"\n'
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = False) -> None:
        """Starts the bridge; returns once it has subscribed to the engine's events.

        With `ready`, only once it also says READY=1 (sd_notify): after its start-up listing
        of containers, which can take seconds while dockerd is busy, and until which the
        events that come meanwhile wait.
        """
        env = dict(os.environ)
        notify_path = self.config.parent / "notify"
        notify: socket.socket | None = None
        if ready:
            notify_path.unlink(missing_ok=True)
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(str(notify_path))
            notify.settimeout(0.5)
            env["NOTIFY_SOCKET"] = str(notify_path)
        self.process = subprocess.Popen(
            [BRIDGE, "run", "--config", str(self.config)], stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 60
        try:
            while self.metric("journald_bridge_docker_up") != 1 or (
                notify is not None and not _says_ready(notify)
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError("bridge not ready")
                time.sleep(0.05)
        finally:
            if notify is not None:
                # Nobody reads it from now on: without it, the bridge's later messages fail
                # at once (which it ignores) instead of filling a socket buffer.
                notify.close()
                notify_path.unlink(missing_ok=True)

    def metric(self, name: str) -> float:
        """The sum of a metric's samples over all its labels (-1 when unreachable)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                lines = r.read().decode().splitlines()
        except OSError:
            return -1.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith(name + " ") or line.startswith(name + "{")
        )

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
            self.process = None


def _says_ready(notify: socket.socket) -> bool:
    """Whether the next sd_notify message (waiting up to the socket's timeout) has READY=1."""
    try:
        return "READY=1" in notify.recv(4096).decode(errors="replace").splitlines()
    except TimeoutError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
