"""Opening files in a directory we do not trust, and closing descriptors whoever holds them.

Whoever runs a container writes inside its directory, so a file there is opened O_NOFOLLOW and
O_NONBLOCK, and only a regular file is kept: neither a symlink nor a FIFO (whose open would
block the opening thread) gets in, nor a device or a directory. Every file opened there by name
goes through here (`open_regular` or `open_file`). Config files are read whole or not at all,
and bounded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

CONFIG_MAX_BYTES = 1 << 20
# O_NOCTTY: a terminal device at such a name must not become the process's controlling one.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


class OpenFailed(Exception):
    """A file not opened. str() is the one-line reason: an errno name ("ENOENT": not there,
    "ELOOP": a symlink, ...) or "not a regular file"."""


class NotRegularFile(OSError):
    """A name that led to a FIFO, a device, a directory or a socket (closed again at once)."""


def errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """A regular file opened non-blocking, and its stat. Raises OpenFailed."""
    try:
        return _open_regular(path)
    except NotRegularFile:
        raise OpenFailed("not a regular file") from None
    except OSError as e:
        raise OpenFailed(errname(e)) from None


def open_file(path: str) -> tuple[int, os.stat_result]:
    """A regular file opened as open_regular does, then set blocking, and its stat. Raises
    OSError as os.open does (FileNotFoundError; ELOOP: a symlink) or NotRegularFile, for
    callers that tell a file gone from one that is not a file by the exception's type."""
    fd, st = _open_regular(path)
    try:
        os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        raise
    return fd, st


def file_kind(mode: int) -> str:
    """What a name that is not a regular file leads to, for a one-line reason."""
    for test, kind in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "device"),
        (stat.S_ISBLK, "device"),
    ):
        if test(mode):
            return kind
    return "regular file" if stat.S_ISREG(mode) else "special file"


def _open_regular(path: str) -> tuple[int, os.stat_result]:
    fd = os.open(path, _OPEN_FLAGS)
    with contextlib.suppress(OSError):
        if stat.S_ISREG((st := os.fstat(fd)).st_mode):
            return fd, st
    os.close(fd)
    raise NotRegularFile(f"{path}: not a regular file")


def read_config(path: str, max_bytes: int) -> bytes | None:
    """A config file's bytes; None when absent, bigger than `max_bytes`, or growing."""
    try:
        fd, st = open_regular(path)
    except OpenFailed:
        return None
    try:
        # dockerd replaces these files by rename, so the one opened does not grow; one that
        # does is being written by someone else: no bytes rather than half of them.
        data = os.read(fd, st.st_size + 1) if st.st_size <= max_bytes else None
        return None if data is None or len(data) > st.st_size else data
    except OSError:
        return None
    finally:
        os.close(fd)


def close_quietly(fd: int) -> None:
    """Closes a descriptor handed over to us; one already closed is no error worth a word."""
    with contextlib.suppress(OSError):
        os.close(fd)
