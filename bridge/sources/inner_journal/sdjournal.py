"""sd-journal over file descriptors (`sd_journal_open_files_fd`), through ctypes.

python-systemd's `_Reader` opens journal files by path only; a confined worker (`sandbox`) may
open nothing, so it is given the files open and reads them through this: the part of
`_Reader`'s interface the worker and `position.resume` use, with the same names and the same
errors (OSError with the errno sd-journal returned; ValueError for a field name that is not
ASCII). Invariants:

- The fds stay the caller's: sd-journal is given duplicates (libsystemd 252 closes the fds it
  was given in sd_journal_close), and whatever it leaves of those is closed here. The caller is
  single-threaded (the worker): no fd number is reused between sd-journal's close and ours.
- Every string sd-journal allocates (a cursor) is freed here; field data is copied out before
  the next call, as sd-journal may move its mappings.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from typing import Any

_lib = ctypes.CDLL("libsystemd.so.0", use_errno=True)  # find_library would run ldconfig
_libc = ctypes.CDLL(None)
_j = ctypes.c_void_p


def _fn(name: str, *args: object) -> Any:
    fn = getattr(_lib, name)
    fn.argtypes = list(args)
    fn.restype = ctypes.c_int
    return fn


_open_files_fd = _fn(
    "sd_journal_open_files_fd",
    ctypes.POINTER(_j),
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_uint,
    ctypes.c_int,
)
_close = _lib.sd_journal_close
_close.argtypes = [_j]
_close.restype = None
_next = _fn("sd_journal_next", _j)
_seek_head = _fn("sd_journal_seek_head", _j)
_seek_cursor = _fn("sd_journal_seek_cursor", _j, ctypes.c_char_p)
_test_cursor = _fn("sd_journal_test_cursor", _j, ctypes.c_char_p)
_get_cursor = _fn("sd_journal_get_cursor", _j, ctypes.POINTER(ctypes.c_void_p))
_get_realtime = _fn("sd_journal_get_realtime_usec", _j, ctypes.POINTER(ctypes.c_uint64))
_get_monotonic = _fn(
    "sd_journal_get_monotonic_usec",
    _j,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.c_char_p,  # sd_id128_t *: 16 bytes
)
_set_threshold = _fn("sd_journal_set_data_threshold", _j, ctypes.c_size_t)
# Called once per field of every entry: without argtypes, and given ctypes objects only (the
# handle as a c_void_p, byref pointers), ctypes passes them without converting each argument.
# Never pass them a plain int: without argtypes it goes as a C int, and a pointer is cut short.
_restart_data = _lib.sd_journal_restart_data
_restart_data.restype = None
_enumerate_data = _lib.sd_journal_enumerate_data  # returns int (ctypes' default restype)
_string_at = ctypes.string_at
# Field names kept decoded between entries: a journal holds few distinct names, and one of
# endless or long names (a forged file) must not grow the cache. journald's own names are at
# most 64 bytes.
_MAX_NAMES = 4096
_MAX_NAME_BYTES = 64
_free = _libc.free
_free.argtypes = [ctypes.c_void_p]
_free.restype = None


def field_name(raw: bytes, names: dict[bytes, str]) -> str:
    """A field's name decoded (ValueError: not ASCII), and kept in `names` while the cache is
    small and the name is one journald could have written (see _MAX_NAMES)."""
    name = raw.decode("ascii")  # UnicodeDecodeError is a ValueError
    if len(names) < _MAX_NAMES and len(raw) <= _MAX_NAME_BYTES:
        names[raw] = name
    return name


def _ok(result: int) -> int:
    if result < 0:
        raise OSError(-result, os.strerror(-result))
    return result


class FdJournal:
    """A journal made of the open files `fds`; see the module."""

    def __init__(self, fds: list[int]) -> None:
        handle = _j()
        self._dups = [os.dup(fd) for fd in fds]
        array = (ctypes.c_int * len(fds))(*self._dups)
        try:
            _ok(_open_files_fd(ctypes.byref(handle), array, len(fds), 0))
        except OSError:
            self._close_dups()
            raise
        self._j: int | None = handle.value
        self._j_arg = ctypes.c_void_p(handle.value)  # for the functions without argtypes
        # made once, not per call: an entry reads many fields, each a call
        self._data = ctypes.c_void_p()
        self._length = ctypes.c_size_t()
        self._data_ref = ctypes.byref(self._data)
        self._length_ref = ctypes.byref(self._length)
        self._usec = ctypes.c_uint64()
        self._usec_ref = ctypes.byref(self._usec)
        self._boot = ctypes.create_string_buffer(16)
        self._names: dict[bytes, str] = {}  # field names repeat from entry to entry

    def _close_dups(self) -> None:
        for fd in self._dups:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._dups = []

    def _handle(self) -> int:
        if self._j is None:
            raise OSError(errno.EBADF, "journal closed")
        return self._j

    def close(self) -> None:
        if self._j is not None:
            _close(self._j)
            self._j = None
            self._j_arg = ctypes.c_void_p()  # NULL: libsystemd refuses it (-EINVAL)
            self._close_dups()

    @property
    def data_threshold(self) -> int:
        raise AttributeError("write-only")

    @data_threshold.setter
    def data_threshold(self, size: int) -> None:
        _ok(_set_threshold(self._handle(), size))

    def _next(self, skip: int = 1) -> int:
        moved = 0
        for _ in range(skip):
            if not _ok(_next(self._handle())):
                break
            moved += 1
        return moved

    def seek_head(self) -> None:
        _ok(_seek_head(self._handle()))

    def seek_cursor(self, cursor: str) -> None:
        _ok(_seek_cursor(self._handle(), cursor.encode()))

    def test_cursor(self, cursor: str) -> bool:
        return _ok(_test_cursor(self._handle(), cursor.encode())) > 0

    def _get_cursor(self) -> str:
        out = ctypes.c_void_p()
        _ok(_get_cursor(self._handle(), ctypes.byref(out)))
        try:
            return ctypes.string_at(out.value or 0).decode("ascii")
        finally:
            _free(out.value)

    def _get_realtime(self) -> int:
        _ok(_get_realtime(self._handle(), self._usec_ref))
        return self._usec.value

    def _get_monotonic(self) -> tuple[int, bytes]:
        _ok(_get_monotonic(self._handle(), self._usec_ref, self._boot))
        return self._usec.value, self._boot.raw

    def _get_all(self) -> dict[str, bytes | list[bytes]]:
        """The entry's fields: a value, or a list of them for a field that repeats."""
        fields: dict[str, bytes | list[bytes]] = {}
        for name, value in self.get_pairs():
            known = fields.get(name)
            if known is None:
                fields[name] = value
            elif isinstance(known, list):
                known.append(value)
            else:
                fields[name] = [known, value]
        return fields

    def get_pairs(self) -> list[tuple[str, bytes]]:
        """The entry's fields as (name, value), in the journal's order; a field that repeats
        is there once per value. The worker's hot path: no dict, no ctypes object per field."""
        self._handle()  # raises once closed
        handle = self._j_arg
        _restart_data(handle)
        data, length = self._data, self._length
        data_ref, length_ref = self._data_ref, self._length_ref
        names = self._names
        pairs: list[tuple[str, bytes]] = []
        while True:
            result = _enumerate_data(handle, data_ref, length_ref)
            if result <= 0:
                _ok(result)
                return pairs
            name_bytes, sep, value = _string_at(data.value or 0, length.value).partition(b"=")
            if not sep:
                raise OSError(errno.EBADMSG, "a field without '='")
            name = names.get(name_bytes)
            if name is None:
                name = field_name(name_bytes, names)
            pairs.append((name, value))

    def __enter__(self) -> FdJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
