"""The real dockerd of the integration tests: a health probe and a recovery for when it hangs.

dockerd 20.10 (Debian 12's docker.io 20.10.24) can deadlock in libnetwork when many containers
leave a network at once: `getSvcRecords` takes a network's lock then the controller's, while
`processEndpointDelete` takes them the other way round (moby/moby#42545, backported to 20.10 only
after 20.10.24). A goroutine dump taken here showed exactly that, after 200 test containers
exited together: 92 goroutines waiting on those locks, container exits and starts stuck for
good. Test containers therefore run with networking disabled (no endpoint to delete). Should
dockerd hang anyway, a test that fails while dockerd cannot run a container is reported,
dockerd is restarted (after a goroutine dump, kept for a bug report) and the test runs once
more; a test that fails while dockerd works is a plain failure.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import docker

SETUP = Path(__file__).parents[2] / "scripts" / "setup.sh"
DUMPS = Path("/var/log/journald-bridge-tests")
PROBE_IMAGE = "bridge-test/busybox:latest"
MANAGED_CONTAINERD = "/var/run/docker/containerd/containerd.toml"


def _pids(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def healthy(timeout: float = 30) -> bool:
    """Whether dockerd starts, runs and removes a container within `timeout` seconds.

    Listing is not enough: the hang seen left the API answering while no container started.
    """
    try:
        client = docker.from_env(version="1.41", timeout=timeout)
    except docker.errors.DockerException:
        return False
    try:
        client.containers.run(
            # `sh -c :`, not `true`: the test image links only the applets the tests use, so a
            # probe of `true` failed every time and made every failing test look like a hang.
            PROBE_IMAGE,
            ["sh", "-c", ":"],
            remove=True,
            network_disabled=True,
            network_mode="none",
        )
        return True
    except Exception:  # a timeout, a refused connection, an API error: all mean "not healthy"
        return False
    finally:
        client.close()


def _dump_goroutines() -> str:
    """Asks dockerd for its goroutine stacks; returns where they were kept and their summary."""
    before = set(glob.glob("/var/run/docker/goroutine-stacks-*.log"))
    for pid in _pids("dockerd"):
        os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        new = set(glob.glob("/var/run/docker/goroutine-stacks-*.log")) - before
        if new:
            time.sleep(0.5)  # written in one go, but let it finish
            source = Path(sorted(new)[-1])
            DUMPS.mkdir(parents=True, exist_ok=True)
            kept = DUMPS / source.name
            shutil.copyfile(source, kept)
            return f"goroutine dump {kept} ({summarise(kept.read_text(errors='replace'))})"
        time.sleep(0.2)
    return "no goroutine dump"


_PLUMBING = ("runtime.", "sync.", "internal/", "syscall.")
_BLOCKED = re.compile(r"goroutine \d+ \[([^,\]]+)[^\]]*\d+ minutes?\]:\n")


def summarise(stacks: str, top: int = 3) -> str:
    """Where goroutines blocked for a minute or more wait: their first frame outside Go's own
    runtime, sync and poll plumbing, most common first."""
    waiting: collections.Counter[str] = collections.Counter()
    for block in stacks.split("\n\n"):
        header = _BLOCKED.match(block)
        if header is None:
            continue
        frames = [line.split("(0x")[0] for line in block.splitlines()[1:] if line[:1] != "\t"]
        where = next(
            (f for f in frames if not f.startswith(_PLUMBING)), frames[0] if frames else ""
        )
        waiting[f"{header.group(1)} in {where.rsplit('/', 1)[-1]}"] += 1
    if not waiting:
        return "no goroutine blocked for a minute"
    return "; ".join(f"{n} x {where}" for where, n in waiting.most_common(top))


def restart(*, force: bool = False) -> None:
    """Stops dockerd (and the containerd it started) and starts them the way `make setup` does."""
    stop(force=force)
    start()


def stop(*, force: bool = False) -> None:
    """Stops dockerd and its containerd; returns once both are gone.

    `force` kills at once: a hung dockerd may never finish a graceful shutdown.
    """
    dockerds = _pids("dockerd")
    # dockerd's own containerd, also one a killed dockerd left behind (never a system one)
    children = [pid for pid in _pids("containerd") if MANAGED_CONTAINERD in _cmdline(pid)]
    if not force:
        for pid in dockerds:
            os.kill(pid, signal.SIGTERM)
        _wait_gone(dockerds, 60)
    for pid in dockerds + children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not _wait_gone(dockerds + children, 30):
        raise RuntimeError("dockerd or its containerd did not exit")
    # Killed, they leave their pid files: a new dockerd refuses to start beside its own, and
    # takes a zombie containerd (not yet reaped by whoever adopted it) for a live one.
    for pid_file in ("/var/run/docker.pid", "/var/run/docker/containerd/containerd.pid"):
        Path(pid_file).unlink(missing_ok=True)


def start() -> None:
    """Starts dockerd the way `make setup` does (a no-op while one answers)."""
    subprocess.run([str(SETUP)], check=True)


def _alive(pid: int) -> bool:
    """Running or stopped; a zombie (killed, not yet reaped by whoever adopted it) is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def recover() -> str:
    """Restarts a hung dockerd; returns a one-line account of what was found."""
    found = _dump_goroutines()
    restart(force=True)
    return found
