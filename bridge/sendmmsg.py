"""sendmmsg(2) for CPython, through ctypes: many datagrams per system call.

Why: every `socket.send` releases and re-takes the GIL. With reader threads busy parsing, the
writer then waits for the GIL after each entry, and the whole bridge runs at a fraction of
journald's speed. One ctypes call sends a batch with one GIL release (measured: see bench/).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Sequence

MSG_DONTWAIT = 0x40


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_sendmmsg = getattr(_libc, "sendmmsg", None)
if _sendmmsg is not None:
    _sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint, ctypes.c_int]
    _sendmmsg.restype = ctypes.c_int

AVAILABLE = _sendmmsg is not None


def sendmmsg(fd: int, datagrams: Sequence[bytes]) -> int:
    """Sends datagrams on a connected socket without blocking; returns how many were sent.

    Raises OSError (BlockingIOError for EAGAIN) when not even the first one could be sent.
    """
    count = len(datagrams)
    iovecs = (_IoVec * count)()
    headers = (_MMsgHdr * count)()
    iov_base = ctypes.addressof(iovecs)
    iov_size = ctypes.sizeof(_IoVec)
    # c_char_p points into each bytes object without copying; `datagrams` keeps them alive.
    pointers = [ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value for data in datagrams]
    for i in range(count):
        iov = iovecs[i]
        iov.iov_base = pointers[i]
        iov.iov_len = len(datagrams[i])
        header = headers[i].msg_hdr
        header.msg_iov = iov_base + i * iov_size
        header.msg_iovlen = 1
    assert _sendmmsg is not None
    sent = int(_sendmmsg(fd, headers, count, MSG_DONTWAIT))
    if sent < 0:
        err = ctypes.get_errno()
        if err == errno.EAGAIN:
            raise BlockingIOError(err, os.strerror(err))
        raise OSError(err, os.strerror(err))
    return sent
