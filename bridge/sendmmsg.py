"""sendmmsg(2) for CPython, through ctypes: many datagrams per system call.

Why: every `socket.send` releases and re-takes the GIL. With reader threads busy parsing, the
writer then waits for the GIL after each entry and the bridge runs at a fraction of journald's
speed. One call sends a batch with one GIL release.

The iovec and mmsghdr arrays are packed with `struct` in one call per batch (building ctypes
structures field by field cost more than the send itself). Data pointers come from the bytes
objects' buffers; `PackedDatagrams` keeps the list, and so them, alive.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import struct
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


@functools.lru_cache(maxsize=64)
def _structs(count: int) -> tuple[struct.Struct, struct.Struct]:
    return struct.Struct("<" + _IOVEC * count), struct.Struct("<" + _MMSGHDR * count)


class PackedDatagrams:
    """A run of datagrams packed once into iovec and mmsghdr arrays, sendable from any index.

    Under backpressure journald frees one slot at a time, so a run goes out in many calls;
    packing once keeps each retry a single system call instead of re-packing what is left.
    The datagrams list is kept referenced: the arrays point into its bytes objects.
    """

    __slots__ = ("_base", "_datagrams", "_headers", "_iovecs", "count")

    def __init__(self, datagrams: Sequence[bytes]) -> None:
        assert _DATA_OFFSET is not None
        self._datagrams = datagrams
        self.count = count = len(datagrams)
        iov_struct, hdr_struct = _structs(count)
        self._iovecs = ctypes.create_string_buffer(iov_struct.size)
        self._headers = ctypes.create_string_buffer(hdr_struct.size)
        offset = _DATA_OFFSET
        iov_values: list[int] = []
        for data in datagrams:
            iov_values += (id(data) + offset, len(data))
        iov_struct.pack_into(self._iovecs, 0, *iov_values)
        iov_base = ctypes.addressof(self._iovecs)
        hdr_values: list[int] = []
        for i in range(count):
            hdr_values += (0, 0, iov_base + 16 * i, 1, 0, 0, 0, 0)
        hdr_struct.pack_into(self._headers, 0, *hdr_values)
        self._base = ctypes.addressof(self._headers)

    def send(self, fd: int, start: int) -> int:
        """Sends datagrams[start:] on a connected socket without blocking; returns how many
        went. Raises BlockingIOError (EAGAIN) or OSError when not even the first one could."""
        assert _sendmmsg is not None and 0 <= start < self.count
        sent = int(
            _sendmmsg(fd, self._base + _MMSGHDR_SIZE * start, self.count - start, MSG_DONTWAIT)
        )
        if sent < 0:
            err = ctypes.get_errno()
            if err == errno.EAGAIN:
                raise BlockingIOError(err, os.strerror(err))
            raise OSError(err, os.strerror(err))
        return sent
