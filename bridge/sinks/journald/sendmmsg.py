"""sendmmsg(2) for CPython, through ctypes: many datagrams per system call.

Why: every `socket.send` releases and re-takes the GIL. With reader threads busy parsing, the
writer then waits for the GIL after each entry and the bridge runs at a fraction of journald's
speed. One call sends a batch with one GIL release.

The mmsghdr array is built once per thread and reused; a batch only packs its iovecs, with
`struct` in one call (building ctypes structures field by field cost more than the send
itself). Data pointers come from the bytes objects' buffers; `PackedDatagrams` keeps the list,
and so them, alive.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import itertools
import os
import struct
import threading
from collections.abc import Sequence

MSG_DONTWAIT = 0x40
_IOVEC = "QQ"  # iov_base, iov_len
# struct mmsghdr on 64-bit Linux: msghdr (name, namelen, iov, iovlen, control, controllen,
# flags) then msg_len, with padding: 64 bytes.
_MMSGHDR = "QI4xQQQQi4xI4x"
_MMSGHDR_SIZE = struct.calcsize("<" + _MMSGHDR)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_sendmmsg = getattr(_libc, "sendmmsg", None)
if _sendmmsg is not None:
    _sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    _sendmmsg.restype = ctypes.c_int


def _bytes_data_offset() -> int | None:
    """Where a bytes object's data starts, relative to id(); None if that cannot be trusted."""
    offset = bytes.__basicsize__ - 1
    probe = b"journald-bridge"
    address = ctypes.cast(ctypes.c_char_p(probe), ctypes.c_void_p).value
    return offset if address == id(probe) + offset else None


_DATA_OFFSET = _bytes_data_offset()
AVAILABLE = _sendmmsg is not None and _DATA_OFFSET is not None and _MMSGHDR_SIZE == 64


MAX_RUN = 256  # datagrams per PackedDatagrams


class _Arrays:
    """An iovec array and an mmsghdr array whose headers already point at the iovecs.

    Building the headers is most of the packing work and never changes, so it is done once per
    thread; packing a run then only writes each datagram's address and length.
    """

    __slots__ = ("_headers", "base", "iovecs")

    def __init__(self) -> None:
        self.iovecs = ctypes.create_string_buffer(16 * MAX_RUN)
        self._headers = headers = ctypes.create_string_buffer(_MMSGHDR_SIZE * MAX_RUN)
        iov_base = ctypes.addressof(self.iovecs)
        values = [0] * (8 * MAX_RUN)  # every field zero but msg_iov and msg_iovlen
        values[2::8] = range(iov_base, iov_base + 16 * MAX_RUN, 16)
        values[3::8] = itertools.repeat(1, MAX_RUN)
        struct.pack_into("<" + _MMSGHDR * MAX_RUN, headers, 0, *values)
        self.base = ctypes.addressof(headers)


_spare = threading.local()  # each thread's _Arrays while no PackedDatagrams holds them


@functools.lru_cache(maxsize=MAX_RUN)
def _iovec_struct(count: int) -> struct.Struct:
    return struct.Struct("<" + _IOVEC * count)


class PackedDatagrams:
    """A run of datagrams packed once into iovec and mmsghdr arrays, sendable from any index.

    Under backpressure journald frees one slot at a time, so a run goes out in many calls;
    packing once keeps each retry a single system call instead of re-packing what is left.
    The datagrams list is kept referenced: the arrays point into its bytes objects. Use it as
    a context manager so that the next run of the same thread reuses the arrays.
    """

    __slots__ = ("_arrays", "_datagrams", "count")

    def __init__(self, datagrams: Sequence[bytes]) -> None:
        assert _DATA_OFFSET is not None
        if len(datagrams) > MAX_RUN:  # the arrays hold MAX_RUN: never write past them
            raise ValueError(f"at most {MAX_RUN} datagrams per run, not {len(datagrams)}")
        self._datagrams = datagrams
        self.count = count = len(datagrams)
        arrays: _Arrays | None = getattr(_spare, "arrays", None)
        if arrays is None:
            arrays = _Arrays()
        else:
            _spare.arrays = None
        self._arrays = arrays
        # Slice assignments from C-level iterators: a Python loop here, once per entry, cost
        # as much as the system call.
        values = [0] * (2 * count)
        values[0::2] = map(_DATA_OFFSET.__add__, map(id, datagrams))
        values[1::2] = map(len, datagrams)
        _iovec_struct(count).pack_into(arrays.iovecs, 0, *values)

    def __enter__(self) -> PackedDatagrams:
        return self

    def __exit__(self, *exc_info: object) -> None:
        _spare.arrays = self._arrays

    def send(self, fd: int, start: int) -> int:
        """Sends datagrams[start:] on a connected socket without blocking; returns how many
        went. Raises BlockingIOError (EAGAIN) or OSError when not even the first one could."""
        assert _sendmmsg is not None and 0 <= start < self.count
        base = self._arrays.base + _MMSGHDR_SIZE * start
        sent = int(_sendmmsg(fd, base, self.count - start, MSG_DONTWAIT))
        if sent < 0:
            err = ctypes.get_errno()
            if err == errno.EAGAIN:
                raise BlockingIOError(err, os.strerror(err))
            raise OSError(err, os.strerror(err))
        return sent
