"""Opening paths inside a container's root, never outside it.

A container's root (`/proc/<pid>/root`, held open as an O_PATH directory fd) is the container's
to shape: `/var/log/journal` may be a symlink to `/etc`, `system.journal` one to `/etc/shadow`,
a name may be `../../..`, a device node or a FIFO. Invariants of every function here:

- A path is resolved as if `root_fd` were `/`: absolute symlinks, `..` and absolute paths stay
  inside the root (openat2(2) `RESOLVE_IN_ROOT`), and procfs magic links are refused
  (`RESOLVE_NO_MAGICLINKS`), so no name in the container leads to a host file.
- Where openat2 is missing (kernel < 5.6, or a seccomp filter answering ENOSYS/EPERM), the
  same resolution is done in user space, one component at a time with O_NOFOLLOW, symlinks read
  and resolved against our own stack of directory fds: `..` never touches the disk, so a rename
  race cannot walk out of the root.
- `open_regular` opens regular files only, and opens them O_NONBLOCK: a FIFO cannot block the
  caller, and a device node the container made (mknod is in Docker's default capabilities, and
  the host process is not in the container's device cgroup) is never opened for reading.
- Every fd returned is O_CLOEXEC and owned by the caller.

Bind mounts the container was created with are followed: whoever can create a container with
`-v /etc:/var/log/journal` is root on the host already.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bridge.sources.inner_journal import header

# linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# openat2 came with the unified syscall numbering (Linux 5.6): 437 in asm-generic/unistd.h
# (aarch64, riscv, ...) and in x86_64's unistd_64.h alike; checked in this machine's headers.
SYSCALL_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(platform.machine())
_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
_MAX_SYMLINKS = 40  # as the kernel's MAXSYMLINKS
_RETRIES = 8  # RESOLVE_IN_ROOT answers EAGAIN when a rename raced the walk: retry, then give up

JOURNAL_BASES = ("var/log/journal", "run/log/journal")


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _State:
    # None until the first call tells whether the kernel has openat2; tests force False.
    openat2_works: bool | None = None if SYSCALL_OPENAT2 is not None else False


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """The raw openat2(2) system call; raises OSError with the kernel's errno."""
    if SYSCALL_OPENAT2 is None:
        raise OSError(errno.ENOSYS, "openat2 is not wired up for " + platform.machine())
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _syscall(
        ctypes.c_long(SYSCALL_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def openat2_available() -> bool:
    """Whether this kernel (and seccomp filter) lets us use openat2; probed once."""
    if _State.openat2_works is None:
        try:
            os.close(openat2(-100, "/", os.O_PATH | os.O_DIRECTORY, _RESOLVE))  # AT_FDCWD
            _State.openat2_works = True
        except OSError as exc:
            # ENOSYS: no such call; EPERM: a seccomp filter (Docker's before 20.10.0) refuses it
            if exc.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            _State.openat2_works = False
    return _State.openat2_works


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """Opens `path` with `flags` as if `root_fd` were `/`; see the module's invariants."""
    if openat2_available():
        for _ in range(_RETRIES):
            try:
                return openat2(root_fd, path, flags, _RESOLVE)
            except (InterruptedError, BlockingIOError):  # EINTR; EAGAIN: a rename raced
                continue
        raise OSError(errno.EAGAIN, "path resolution kept racing a rename", path)
    return walk_in_root(root_fd, path, flags)


def walk_in_root(root_fd: int, path: str, flags: int) -> int:
    """The user-space equivalent of `openat2(RESOLVE_IN_ROOT)`, for kernels without it.

    Each component is opened O_PATH|O_NOFOLLOW relative to a directory fd we hold; a symlink is
    read (never followed by the kernel) and its target resolved against the root; `..` pops our
    own stack and stops at the root. The result is reopened with `flags` through
    /proc/self/fd, which opens exactly the object we hold, not a name.
    """
    stack = [os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)]
    pending = _components(path)
    links = 0
    final: int | None = None
    try:
        while pending:
            name = pending.pop()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode) and not (
                not pending and flags & os.O_PATH and flags & os.O_NOFOLLOW
            ):
                try:
                    target = os.readlink("", dir_fd=fd)  # the link fd itself (AT_EMPTY_PATH)
                finally:
                    os.close(fd)
                links += 1
                if (not pending and flags & os.O_NOFOLLOW) or links > _MAX_SYMLINKS:  # as openat2
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending.extend(_components(target))
                continue
            if pending:
                if not stat.S_ISDIR(mode):
                    os.close(fd)
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
                stack.append(fd)
            else:
                final = fd
        if final is None:  # the path named the root itself (or `..` of it)
            final = os.dup(stack[-1])
        if flags & os.O_DIRECTORY and not stat.S_ISDIR(os.fstat(final).st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        if flags & os.O_PATH:
            result, final = final, None
            return result
        return os.open(f"/proc/self/fd/{final}", (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC)
    finally:
        for fd in stack:
            os.close(fd)
        if final is not None:
            os.close(final)


def _components(path: str) -> list[str]:
    """The names of `path`, last first (a stack), without empty and `.` components."""
    return [c for c in reversed(path.split("/")) if c not in ("", ".")]


def open_dir(root_fd: int, path: str) -> int:
    """A readable directory fd for `path` inside the root (for listing)."""
    return open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK)


def open_regular(root_fd: int, path: str) -> tuple[int, os.stat_result]:
    """A read-only fd of the regular file `path` inside the root, and its stat.

    The last component must not be a symlink (journald never makes one); the file is opened
    O_PATH first and reopened for reading only once fstat says it is a regular file.
    """
    pathfd = open_in_root(root_fd, path, os.O_PATH | os.O_NOFOLLOW)
    try:
        st = os.fstat(pathfd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        fd = os.open(f"/proc/self/fd/{pathfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    finally:
        os.close(pathfd)
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):  # cannot happen; costs nothing
        os.close(fd)
        raise OSError(errno.ESTALE, "file changed while opening", path)
    return fd, opened


def list_dir(root_fd: int, path: str, limit: int) -> list[str]:
    """At most `limit` names in directory `path` inside the root (the order is the disk's)."""
    fd = open_dir(root_fd, path)
    try:
        names: list[str] = []
        with os.scandir(fd) as entries:
            for entry in entries:
                names.append(entry.name)
                if len(names) >= limit:
                    break
        return names
    finally:
        os.close(fd)


def is_machine_dir(name: str) -> bool:
    """journald's per-machine directory: 32 lower-case hex digits (namespaces are left out)."""
    return len(name) == 32 and all(c in "0123456789abcdef" for c in name)


def is_journal_file(name: str) -> bool:
    """An active, archived or dirty-archived journal file name (not journald's temporaries)."""
    return name.endswith((".journal", ".journal~")) and not name.startswith(".")


@dataclass(frozen=True, slots=True)
class JournalName:
    """One journal file's place inside the root: `base/machine_id/name`."""

    base: str
    machine_id: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.base}/{self.machine_id}/{self.name}"


@dataclass(frozen=True, slots=True)
class JournalListing:
    """What one bounded look at a root's journal directories found.

    `unlisted` counts directories that held more names than were looked at (over the limit
    per directory, or past the scan's total): their other names were not seen.
    """

    names: list[JournalName]
    unlisted: int = 0


def list_journals(
    root_fd: int,
    *,
    per_dir: int = 4096,
    total: int = 8192,
    tick: Callable[[], None] | None = None,
) -> JournalListing:
    """Every journal file name under /var/log/journal and /run/log/journal, sorted, within
    bounds: at most `per_dir` names looked at per directory and `total` in all (the machine
    directories' names included), so a root stuffed with millions of names costs bounded time.
    `tick` is called every 256 names (the worker heartbeats from it)."""
    budget = [total]
    unlisted = 0
    found: list[JournalName] = []
    for base in JOURNAL_BASES:
        machines, cut = _bounded(root_fd, base, per_dir, budget, tick)
        unlisted += cut
        for machine in machines:
            if not is_machine_dir(machine):
                continue
            if budget[0] <= 0:
                unlisted += 1
                continue
            names, cut = _bounded(root_fd, f"{base}/{machine}", per_dir, budget, tick)
            unlisted += cut
            found.extend(JournalName(base, machine, n) for n in names if is_journal_file(n))
    found.sort(key=lambda j: (j.base, j.machine_id, j.name))
    return JournalListing(found, unlisted)


def _bounded(
    root_fd: int, path: str, per_dir: int, budget: list[int], tick: Callable[[], None] | None
) -> tuple[list[str], int]:
    """The names of one directory, at most `per_dir` and what is left of `budget[0]` (spent
    here); and 1 when the directory had more, else 0. Missing or unreadable: empty."""
    limit = min(per_dir, budget[0])
    names: list[str] = []
    try:
        fd = open_dir(root_fd, path)
    except OSError:
        return names, 0
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                if len(names) >= limit:
                    return names, 1
                names.append(entry.name)
                budget[0] -= 1
                if tick is not None and budget[0] % 256 == 0:
                    tick()
    except OSError:
        pass
    finally:
        os.close(fd)
    return names, 0


def journal_names(root_fd: int, limit: int = 4096) -> list[JournalName]:
    """Every journal file name (`list_journals` with `limit` names per directory)."""
    return list_journals(root_fd, per_dir=limit, total=limit * 4).names


def _journal_names(root_fd: int, limit: int) -> Iterator[JournalName]:
    for base in JOURNAL_BASES:
        for machine in _names(root_fd, base, limit):
            if is_machine_dir(machine):
                for name in _names(root_fd, f"{base}/{machine}", limit):
                    if is_journal_file(name):
                        yield JournalName(base, machine, name)


def _names(root_fd: int, path: str, limit: int) -> list[str]:
    try:
        return list_dir(root_fd, path, limit)
    except OSError:
        return []


def has_inner_journal(root_fd: int, max_checked: int = 8) -> bool:
    """Whether the container has a journal file of its own that sd-journal could read: cheap,
    bounded, never raises.

    An empty /var/log/journal does not count: Debian images with systemd installed have one
    whether or not journald ever runs there. Neither does a file that is only named like a
    journal: the first `max_checked` names must show a sound header (`header.problem`, pure
    Python) before one counts, so a worker process is started for real journals only. Looks at
    no more than 64 names per directory.
    """
    for checked, name in enumerate(_journal_names(root_fd, 64)):
        if checked >= max_checked:
            return False
        try:
            fd, _ = open_regular(root_fd, name.path)
        except OSError:
            continue
        try:
            if header.read_problem(fd) is None:
                return True
        except OSError:
            continue
        finally:
            os.close(fd)
    return False


@contextlib.contextmanager
def opened_root(pid: int) -> Iterator[int]:
    """An O_PATH fd of `/proc/<pid>/root`, closed on exit (for probing)."""
    fd = open_root(pid)
    try:
        yield fd
    finally:
        os.close(fd)


def open_root(pid: int) -> int:
    """An O_PATH directory fd of the root of process `pid` (its mount namespace's view).

    Held open, it keeps resolving after the process has exited (files already open stay
    readable; mounts of the dead namespace, a tmpfs /run for one, are detached from it).
    """
    return os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
