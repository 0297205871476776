"""Containment: no name inside a container's root leads to a host file.

Every test runs twice: with openat2(RESOLVE_IN_ROOT) and with the user-space walk that stands in
for it on kernels without openat2. A "host" file sits next to the fake root, and the hostile
names aim at it by absolute path, by `..` and through symlinked directories; where the same
path also exists inside the root (a decoy), the file opened must be the decoy.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.sources.inner_journal import containment
from bridge.sources.inner_journal.containment import (
    has_inner_journal,
    journal_names,
    open_dir,
    open_in_root,
    open_regular,
)

MID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2":
        if not containment.openat2_available():
            pytest.skip("this kernel has no openat2")
    else:
        monkeypatch.setattr(containment._State, "openat2_works", False)
    return str(request.param)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host file that must never be opened, and its directory."""
    secret = tmp_path / "host" / "secret"
    secret.parent.mkdir()
    secret.write_text("host secret\n")
    return secret


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "root"
    path.mkdir()
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield path, fd
    os.close(fd)


def identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def file_identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def test_syscall_number_is_437_here() -> None:
    assert containment.SYSCALL_OPENAT2 == 437  # x86_64 and aarch64 alike


def test_plain_paths_open(mode: str, root: tuple[Path, int]) -> None:
    path, fd = root
    (path / "var/log/journal" / MID).mkdir(parents=True)
    (path / "var/log/journal" / MID / "system.journal").write_bytes(b"LPKSHHRH")
    got, st = open_regular(fd, f"var/log/journal/{MID}/system.journal")
    try:
        assert os.read(got, 8) == b"LPKSHHRH"
        assert stat.S_ISREG(st.st_mode)
    finally:
        os.close(got)


def test_absolute_symlink_to_a_host_file_stays_inside(
    mode: str, root: tuple[Path, int], host: Path
) -> None:
    path, fd = root
    (path / "var/log").mkdir(parents=True)
    # the host's path of the secret, used inside the container, with a decoy at that path inside
    decoy = path / str(host).lstrip("/")
    decoy.parent.mkdir(parents=True)
    decoy.write_text("decoy\n")
    (path / "var/log/file").symlink_to(host)
    got = open_in_root(fd, "var/log/file", os.O_RDONLY)
    try:
        assert identity(got) == file_identity(decoy) != file_identity(host)
    finally:
        os.close(got)
    decoy.unlink()
    with pytest.raises(FileNotFoundError):
        open_in_root(fd, "var/log/file", os.O_RDONLY)


def test_a_journal_file_that_is_a_symlink_is_refused(
    mode: str, root: tuple[Path, int], host: Path
) -> None:
    path, fd = root
    machine = path / "var/log/journal" / MID
    machine.mkdir(parents=True)
    (machine / "system.journal").symlink_to(host)  # system.journal -> /etc/shadow, as it were
    with pytest.raises(OSError) as exc:
        open_regular(fd, f"var/log/journal/{MID}/system.journal")
    assert exc.value.errno == errno.EINVAL  # "not a regular file": the link itself, not followed
    with pytest.raises(OSError) as exc:
        open_in_root(fd, f"var/log/journal/{MID}/system.journal", os.O_RDONLY | os.O_NOFOLLOW)
    assert exc.value.errno == errno.ELOOP


def test_symlinked_journal_directory_resolves_inside(
    mode: str, root: tuple[Path, int], host: Path
) -> None:
    path, fd = root
    (path / "var/log").mkdir(parents=True)
    (path / "var/log/journal").symlink_to(host.parent)  # /var/log/journal -> /etc, as it were
    with pytest.raises(FileNotFoundError):
        open_regular(fd, "var/log/journal/secret")
    inside = path / str(host.parent).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "secret").write_text("inside\n")
    got, _ = open_regular(fd, "var/log/journal/secret")
    try:
        assert os.read(got, 100) == b"inside\n"
    finally:
        os.close(got)


@pytest.mark.parametrize("dots", ["../../../", "../" * 40, "./.././../var/../"])
def test_dot_dot_stops_at_the_root(
    mode: str, root: tuple[Path, int], host: Path, dots: str
) -> None:
    path, fd = root
    relative = os.path.relpath(host.parent, path / "var/log/journal")  # ../../../../host
    (path / "var/log/journal").mkdir(parents=True)
    (path / "var/log/journal/up").symlink_to(relative)
    with pytest.raises(FileNotFoundError):
        open_regular(fd, "var/log/journal/up/secret")
    with pytest.raises(FileNotFoundError):
        open_regular(fd, dots + "host/secret")
    with pytest.raises(FileNotFoundError):
        open_regular(fd, "/" + relative + "/secret")
    (path / "host").mkdir()
    (path / "host/secret").write_text("inside\n")
    for name in (dots + "host/secret", "var/log/journal/up/secret"):
        got, _ = open_regular(fd, name)
        try:
            assert os.read(got, 100) == b"inside\n"
        finally:
            os.close(got)


def test_symlink_loops_end(mode: str, root: tuple[Path, int]) -> None:
    path, fd = root
    (path / "a").symlink_to("b")
    (path / "b").symlink_to("/a")
    with pytest.raises(OSError) as exc:
        open_in_root(fd, "a/x", os.O_RDONLY)
    assert exc.value.errno == errno.ELOOP


def test_a_fifo_does_not_block_and_is_refused(mode: str, root: tuple[Path, int]) -> None:
    path, fd = root
    os.mkfifo(path / "system.journal")
    started = time.monotonic()
    with pytest.raises(OSError) as exc:
        open_regular(fd, "system.journal")
    assert exc.value.errno == errno.EINVAL
    assert time.monotonic() - started < 1


def test_a_device_node_is_never_opened(mode: str, root: tuple[Path, int]) -> None:
    path, fd = root
    try:  # a block device of the host's disk would do the same; /dev/null's numbers suffice
        os.mknod(path / "system.journal", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    with pytest.raises(OSError) as exc:
        open_regular(fd, "system.journal")
    assert exc.value.errno == errno.EINVAL


def test_magic_links_are_refused_by_openat2() -> None:
    if not containment.openat2_available():
        pytest.skip("this kernel has no openat2")
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with pytest.raises(OSError) as exc:
            open_in_root(root, "proc/self/root/etc/hostname", os.O_RDONLY)
        assert exc.value.errno == errno.ELOOP
    finally:
        os.close(root)


def test_the_walk_resolves_magic_links_by_name_only(tmp_path: Path, monkeypatch) -> None:
    """/proc/self/fd/N inside a root is read as the text it says, resolved inside the root."""
    monkeypatch.setattr(containment._State, "openat2_works", False)
    (tmp_path / "proc").mkdir()
    outside = os.open(tmp_path / "proc", os.O_RDONLY)  # a magic link that would lead outside
    try:
        (tmp_path / "link").symlink_to(f"/proc/self/fd/{outside}")
        root = os.open(tmp_path / "proc", os.O_PATH | os.O_DIRECTORY)
        try:
            with pytest.raises(FileNotFoundError):
                open_in_root(root, f"self/fd/{outside}", os.O_RDONLY)
        finally:
            os.close(root)
    finally:
        os.close(outside)


def test_directories_open_and_list(mode: str, root: tuple[Path, int]) -> None:
    path, fd = root
    (path / "d").mkdir()
    for i in range(5):
        (path / "d" / f"f{i}").touch()
    assert sorted(containment.list_dir(fd, "d", 100)) == [f"f{i}" for i in range(5)]
    assert len(containment.list_dir(fd, "d", 3)) == 3
    dirfd = open_dir(fd, "/d/../d")
    os.close(dirfd)
    with pytest.raises(NotADirectoryError):
        open_dir(fd, "d/f1")


def test_journal_names_and_detection(mode: str, root: tuple[Path, int], host: Path) -> None:
    path, fd = root
    assert not has_inner_journal(fd)
    (path / "var/log/journal").mkdir(parents=True)  # Debian images with systemd have this
    assert not has_inner_journal(fd)
    (path / "var/log/journal/not-a-machine").mkdir()
    (path / "var/log/journal/not-a-machine/system.journal").touch()
    (path / "var/log/journal" / (MID + ".ns")).mkdir()  # a journal namespace: left out
    assert not has_inner_journal(fd)
    (path / "run/log/journal" / MID).mkdir(parents=True)
    for name in ("system.journal", "user-1000@x.journal~", ".#system.journalXYZ", "notes.txt"):
        (path / "run/log/journal" / MID / name).touch()
    assert not has_inner_journal(fd)  # named like journals, but empty: no worker for those
    (path / "run/log/journal" / MID / "system.journal").write_bytes(sound_header())
    assert has_inner_journal(fd)
    assert [n.path for n in journal_names(fd)] == [
        f"run/log/journal/{MID}/system.journal",
        f"run/log/journal/{MID}/user-1000@x.journal~",
    ]


def sound_header(size: int = 4096) -> bytes:
    """The smallest file whose header passes `header.problem`: an empty journal."""
    head = (
        b"LPKSHHRH" + bytes(80) + (208).to_bytes(8, "little") + (size - 208).to_bytes(8, "little")
    )
    return head.ljust(size, b"\0")


def test_a_file_only_named_like_a_journal_is_not_one(mode: str, root: tuple[Path, int]) -> None:
    """r29: a 13-byte file bought a container a worker process; hostile look-alikes too."""
    path, fd = root
    directory = path / "var/log/journal" / MID
    directory.mkdir(parents=True)
    (directory / "x.journal").write_bytes(b"not a journal")
    assert not has_inner_journal(fd)
    (directory / "y.journal").write_bytes(b"LPKSHHRH" + bytes(300))  # the magic, and no header
    (directory / "fifo.journal").parent.mkdir(exist_ok=True)
    os.mkfifo(directory / "fifo.journal")  # never opened for reading: no hang
    (directory / "z.journal").symlink_to("/var/log/journal")
    assert not has_inner_journal(fd)
    (directory / "system.journal").write_bytes(sound_header())
    assert has_inner_journal(fd)


def test_only_the_first_few_look_alikes_are_read(
    root: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, fd = root
    directory = path / "var/log/journal" / MID
    directory.mkdir(parents=True)
    for i in range(30):
        (directory / f"a{i:02d}.journal").write_bytes(b"junk")
    opened = []
    real_open = containment.open_regular

    def counting(root_fd: int, name: str) -> tuple[int, os.stat_result]:
        opened.append(name)
        return real_open(root_fd, name)

    monkeypatch.setattr(containment, "open_regular", counting)
    assert not has_inner_journal(fd, max_checked=8)
    assert len(opened) == 8


def test_detection_of_a_real_process_root() -> None:
    with containment.opened_root(os.getpid()) as fd:
        assert isinstance(has_inner_journal(fd), bool)


def test_a_rename_race_cannot_walk_out(mode: str, root: tuple[Path, int], host: Path) -> None:
    """While a directory inside the root is moved about, `..` from it never reaches the host."""
    path, fd = root
    (path / "a/b/c").mkdir(parents=True)
    stop = threading.Event()

    def shuffle() -> None:
        while not stop.is_set():
            os.rename(path / "a/b", path / "b")
            os.rename(path / "b", path / "a/b")

    thread = threading.Thread(target=shuffle)
    thread.start()
    try:
        for _ in range(2000):
            with pytest.raises(FileNotFoundError):
                open_regular(fd, "a/b/c/../../../../../host/secret")
    finally:
        stop.set()
        thread.join()
