"""The one thread that finds containers' own journals: a "container" here is a process
chrooted into a directory (busybox), so that /proc/<pid>/root is that directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.sources.inner_journal import containment
from bridge.sources.inner_journal.watch import InnerJournalWatch
from bridge.telemetry import Telemetry

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
MACHINE = "ab" * 16

pytestmark = pytest.mark.skipif(not Path(BUSYBOX).exists(), reason="needs busybox")


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Callable[[], tuple[subprocess.Popen[bytes], Path]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[subprocess.Popen[bytes], Path]:
        root = tmp_path / f"root{len(procs)}"
        root.mkdir()
        shutil.copy(BUSYBOX, root / "busybox")
        proc = subprocess.Popen(["chroot", str(root), "/busybox", "sleep", "60"])
        procs.append(proc)
        for _ in range(500):  # until chroot(2) ran: before, its root is the host's
            if os.readlink(f"/proc/{proc.pid}/root") == str(root):
                break
            time.sleep(0.01)
        return proc, root

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


class Found:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.event = threading.Event()

    def __call__(self, cid: str, pid: int) -> None:
        self.calls.append((cid, pid))
        self.event.set()


@pytest.fixture
def watch() -> Iterator[tuple[InnerJournalWatch, Found, CollectorRegistry]]:
    found, registry = Found(), CollectorRegistry()
    instance = InnerJournalWatch(found, Telemetry(registry), first_seconds=0.05, max_seconds=0.2)
    instance.start()
    yield instance, found, registry
    instance.stop()
    instance.join(5)


def journal_file(root: Path, content: bytes | None = None) -> None:
    """A journal file: by default an empty journal (a sound header and nothing else)."""
    directory = root / "var/log/journal" / MACHINE
    directory.mkdir(parents=True)
    if content is None:
        size = 4096
        content = b"LPKSHHRH" + bytes(80) + (208).to_bytes(8, "little")
        content = (content + (size - 208).to_bytes(8, "little")).ljust(size, b"\0")
    (directory / "system.journal").write_bytes(content)


def test_a_file_only_named_like_a_journal_is_not_found(container, watch) -> None:
    """r29: a 13-byte file named like a journal bought a container a worker process."""
    instance, found, _ = watch
    proc, root = container()
    journal_file(root, b"not a journal")
    assert instance.watch("c1", proc.pid)
    assert not found.event.wait(0.5)
    (root / "var/log/journal" / MACHINE / "system.journal").unlink()
    journal_file_again = root / "var/log/journal" / MACHINE / "user-1000.journal"
    journal_file_again.write_bytes(
        b"LPKSHHRH" + bytes(80) + (208).to_bytes(8, "little") + bytes(4000)
    )
    assert found.event.wait(5)


def test_a_journal_that_appears_later_is_found_once(container, watch) -> None:
    instance, found, _ = watch
    proc, root = container()
    (root / "var/log/journal").mkdir(parents=True)  # Debian images have it, journal or not
    assert instance.watch("c1", proc.pid)
    assert not found.event.wait(0.5)
    journal_file(root)
    assert found.event.wait(5)
    assert found.calls == [("c1", proc.pid)]
    assert instance.watching == 0


def test_a_journal_there_from_the_start_is_found_at_once(container, watch) -> None:
    instance, found, _ = watch
    proc, root = container()
    journal_file(root)
    instance.watch("c1", proc.pid)
    assert found.event.wait(2)


def test_a_symlink_out_of_the_root_finds_nothing(container, watch, tmp_path: Path) -> None:
    instance, found, _ = watch
    proc, root = container()
    journal_file(tmp_path / "host")
    (root / "var/log").mkdir(parents=True)
    (root / "var/log/journal").symlink_to(tmp_path / "host/var/log/journal")
    instance.watch("c1", proc.pid)
    assert not found.event.wait(0.6)


def test_an_exited_or_forgotten_container_is_dropped(container, watch) -> None:
    instance, found, _ = watch
    proc, _ = container()
    other, root = container()
    assert instance.watch("c1", proc.pid)
    assert instance.watch("c2", other.pid)
    assert instance.watching == 2
    proc.kill()
    proc.wait()
    instance.forget("c2")
    journal_file(root)
    deadline = 50
    while instance.watching and deadline:
        found.event.wait(0.1)
        deadline -= 1
    assert instance.watching == 0 and not found.calls
    assert not instance.watch("c1", proc.pid)  # gone already


def test_a_root_that_cannot_be_opened_is_counted_and_logged_once(
    container, watch, monkeypatch, caplog
) -> None:
    instance, found, registry = watch

    def denied(pid: int) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(containment, "opened_root", denied)
    first, _ = container()
    second, _ = container()
    instance.watch("c1", first.pid)
    instance.watch("c2", second.pid)
    deadline = 50
    while instance.watching and deadline:
        found.event.wait(0.1)
        deadline -= 1
    assert instance.watching == 0
    errors = registry.get_sample_value(
        "journald_bridge_inner_journal_errors_total", {"kind": "open"}
    )
    assert errors == 2
    assert caplog.text.count("CAP_SYS_PTRACE") == 1
