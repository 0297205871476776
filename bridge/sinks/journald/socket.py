"""The journal sink's transport: a non-blocking AF_UNIX datagram socket to journald.

Policy, in one place:
- EAGAIN (journald's queue is full) is backpressure: wait for POLLOUT and retry, never drop.
  Only the calling thread waits; the socket is non-blocking, so a stalled journald cannot freeze
  the process the way python-systemd's blocking `sendv` does.
- A missing or refused socket (journald stopped, restarting) is retried with backoff and one log
  line when it goes away and one when it is back. libsystemd would report success here; we don't.
- An entry larger than one datagram goes through a sealed memfd, as sd_journal_sendv does.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from typing import Protocol

from bridge.sinks.journald import sendmmsg

log = logging.getLogger(__name__)

_GONE = {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE}
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
_MAX_BACKOFF = 5.0
_ATTEMPTS_ON_UNKNOWN_ERROR = 5
_BATCH = sendmmsg.MAX_RUN  # datagrams per sendmmsg call
# When journald's queue was full, the writer waits until about a quarter of it has drained
# before refilling: journald frees one slot per entry it reads, and waking the writer for each
# one cost both processes more CPU than the entries themselves (bench/results.md).
_DRAIN_SECONDS_PER_SLOT = 3e-6
_MAX_REFILL_PAUSE = 0.002
_QLEN_SYSCTL = "/proc/sys/net/unix/max_dgram_qlen"


class JournalEvents(Protocol):
    """What the socket reports; implemented by telemetry."""

    def journal_send_error(self, errno_name: str) -> None: ...
    def journal_backpressure(self, seconds: float) -> None: ...
    def journal_memfd_send(self) -> None: ...
    def journal_available(self, up: bool) -> None: ...


class JournalSendError(OSError):
    """An entry journald refused for a reason that retrying will not cure."""


# Called while a send waits; returning False abandons the send (shutdown deadline passed).
KeepWaiting = Callable[[], bool]


class JournalSocket:
    def __init__(self, path: str, send_buffer: int, events: JournalEvents) -> None:
        self.path = path
        self._send_buffer = send_buffer
        self._events = events
        self._sock: socket.socket | None = None
        self._max_datagram = 0
        self._gone_since: float | None = None
        self._refill_pause = _refill_pause(_QLEN_SYSCTL)

    def connect(self) -> None:
        """Connects (or reconnects); raises OSError when the socket is not there."""
        self.close()
        sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            _raise_send_buffer(sock, self._send_buffer)
            sock.connect(self.path)
        except OSError:
            sock.close()
            self._events.journal_available(False)
            raise
        # Linux reports twice the usable size; a datagram may use all of it but a small header.
        self._max_datagram = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2 - 64
        self._sock = sock
        self._events.journal_available(True)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def writable(self) -> bool:
        """True unless the socket was found gone and has not come back (for readiness checks)."""
        return self._gone_since is None and os.path.exists(self.path)

    def send(self, datagram: bytes, keep_waiting: KeepWaiting) -> bool:
        """Sends one entry, waiting through backpressure and absence.

        Returns False only when `keep_waiting` gave up. Raises JournalSendError when journald
        keeps refusing this entry for an unexpected reason.
        """
        backoff = 0.05
        unknown_errors = 0
        while True:
            sock = self._sock
            if sock is None:
                if not self._try_reconnect():
                    if not keep_waiting():
                        return False
                    time.sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
                    continue
                sock = self._sock
                assert sock is not None
            try:
                if len(datagram) > self._max_datagram:
                    self._send_memfd(sock, datagram)
                else:
                    sock.send(datagram)
                return True
            except BlockingIOError:
                if not self._wait_writable(sock, keep_waiting):
                    return False
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    self._max_datagram = min(self._max_datagram, len(datagram) - 1)
                    continue
                if exc.errno in _GONE:
                    self._events.journal_send_error(errno.errorcode.get(exc.errno or 0, "EUNKNOWN"))
                    self._lost(exc)
                    continue
                if exc.errno == errno.ENOBUFS:  # kernel memory pressure: back off, like EAGAIN
                    self._events.journal_send_error("ENOBUFS")
                    if not keep_waiting():
                        return False
                    time.sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
                    continue
                unknown_errors += 1
                self._events.journal_send_error(errno.errorcode.get(exc.errno or 0, "EUNKNOWN"))
                if unknown_errors >= _ATTEMPTS_ON_UNKNOWN_ERROR:
                    raise JournalSendError(exc.errno, f"journald refused an entry: {exc}") from exc
                time.sleep(backoff)

    def send_batch(
        self, datagrams: list[bytes], keep_waiting: KeepWaiting
    ) -> tuple[int, list[int]]:
        """Sends datagrams in order, many per system call where it can.

        Returns how many were dealt with (all, unless `keep_waiting` gave up) and the indices of
        those journald refused for good (skipped, see `send`).
        """
        done, count = 0, len(datagrams)
        refused: list[int] = []
        while done < count:
            sock = self._sock
            if sock is None or not sendmmsg.AVAILABLE or len(datagrams[done]) > self._max_datagram:
                done, ok = self._send_one(datagrams, done, refused, keep_waiting)
                if not ok:
                    return done, refused
                continue
            end = done + 1
            while end < count and end - done < _BATCH and len(datagrams[end]) <= self._max_datagram:
                end += 1
            done, ok = self._send_run(sock, datagrams, done, end, refused, keep_waiting)
            if not ok:
                return done, refused
        return done, refused

    def _send_run(
        self,
        sock: socket.socket,
        datagrams: list[bytes],
        start: int,
        end: int,
        refused: list[int],
        keep_waiting: KeepWaiting,
    ) -> tuple[int, bool]:
        """Sends datagrams[start:end] through sendmmsg; returns where it got to."""
        with sendmmsg.PackedDatagrams(datagrams[start:end]) as packed:
            index = start
            while index < end and self._sock is sock:  # a reconnect means packing anew
                try:
                    index += packed.send(sock.fileno(), index - start)
                except BlockingIOError:
                    if not self._wait_writable(sock, keep_waiting):
                        return index, False
                    time.sleep(self._refill_pause)
                except OSError:  # the one-by-one path knows every error
                    index, ok = self._send_one(datagrams, index, refused, keep_waiting)
                    if not ok:
                        return index, False
        return index, True

    def _send_one(
        self, datagrams: list[bytes], index: int, refused: list[int], keep_waiting: KeepWaiting
    ) -> tuple[int, bool]:
        try:
            if not self.send(datagrams[index], keep_waiting):
                return index, False
        except JournalSendError:
            refused.append(index)
        return index + 1, True

    def _wait_writable(self, sock: socket.socket, keep_waiting: KeepWaiting) -> bool:
        started = time.monotonic()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLOUT)
        try:
            while not poller.poll(200):
                if not keep_waiting():
                    return False
        finally:
            self._events.journal_backpressure(time.monotonic() - started)
        return True

    def _send_memfd(self, sock: socket.socket, datagram: bytes) -> None:
        fd = os.memfd_create("journald-bridge", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
        try:
            view = memoryview(datagram)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            self._events.journal_memfd_send()
        finally:
            os.close(fd)

    def _lost(self, exc: OSError) -> None:
        self.close()
        if self._gone_since is None:
            self._gone_since = time.monotonic()
            self._events.journal_available(False)
            log.warning(
                "journal socket %s unavailable (%s); holding lines until it is back",
                self.path,
                exc.strerror,
            )

    def _try_reconnect(self) -> bool:
        try:
            self.connect()
        except OSError as exc:
            self._lost(exc)
            return False
        if self._gone_since is not None:
            log.warning(
                "journal socket %s is back after %.1f s",
                self.path,
                time.monotonic() - self._gone_since,
            )
            self._gone_since = None
        return True


def _refill_pause(sysctl: str) -> float:
    """How long to let journald drain its queue: a quarter of the queue's length in entries."""
    try:
        with open(sysctl) as f:
            qlen = int(f.read())
    except (OSError, ValueError):
        qlen = 10  # the kernel's default
    return min(_MAX_REFILL_PAUSE, max(0, qlen) * _DRAIN_SECONDS_PER_SLOT)


def _raise_send_buffer(sock: socket.socket, size: int) -> None:
    # SO_SNDBUFFORCE (root) goes past net.core.wmem_max, as journald does for its own sockets.
    try:
        sock.setsockopt(socket.SOL_SOCKET, 32, size)  # SO_SNDBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
