"""A small HTTP/1.1 server whose threads, descriptors and time per client are bounded.

No client -- slow, stalled or hostile -- can take threads, descriptors or the service away
(defaults of `Limits` in brackets):

- Threads: one I/O thread runs a selector and does all socket work (accept, TLS handshake,
  reading the request head, writing the reply), non-blocking; `workers` threads (2) only call
  `respond`. Nothing is started per connection, and no thread waits on a client.
- Descriptors: at most `max_connections` (64) connections are open, plus the listener, the
  selector and a wake-up socket pair. At the cap, a new connection evicts the oldest one still
  in its TLS handshake or head, else the oldest still being written to, so a flood of idle
  connections cannot lock a client out: it just has to send its head before that many newer
  connections arrive. A connection waiting for a worker is not evicted.
- Time: `head_timeout` (10 s) from accept to the end of the head, TLS handshake included, then
  `reply_timeout` (10 s) for the reply to be rendered and read. A head is at most `max_head`
  (8 KiB). Connections dropped for time or room are reset, not lingered on.
- Memory: per connection, its head (`max_head` and one read at most) and its rendered reply.
- One request per connection (`Connection: close`); a malformed head is 400, an oversized one
  431. Any body is ignored: `respond` sees the method, the path and the headers.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import NamedTuple

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_connections: int = 64
    workers: int = 2
    head_timeout: float = 10.0  # from accept to the end of the head, TLS handshake included
    reply_timeout: float = 10.0  # from the end of the head to the last byte of the reply
    max_head: int = 8192


class Request(NamedTuple):
    method: str
    path: str  # without the query
    headers: dict[str, str]  # names in lower case


# After EMFILE and the like the listener stays readable: accepting again at once would spin.
_ACCEPT_PAUSE = 1.0
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, frees the buffers now
_HANDSHAKE, _HEAD, _RENDER, _WRITE = "handshake", "head", "render", "write"


class _Conn:
    __slots__ = ("closed", "deadline", "events", "head", "reply", "request", "sock", "state")

    def __init__(self, sock: socket.socket, state: str, deadline: float) -> None:
        self.sock = sock
        self.state = state
        self.deadline = deadline
        self.events = 0  # registered with the selector for these
        self.head = bytearray()
        self.request: Request | None = None
        self.reply = memoryview(b"")  # what is left to send
        self.closed = False


class BoundedServer:
    """Binds at construction (so `port` is known), serves after start(); stop() closes all."""

    def __init__(
        self,
        address: tuple[str, int],
        respond: Callable[[Request], bytes],
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._respond = respond
        self._tls = tls
        self._limits = limits or Limits()
        self._listener = _listen(address)
        try:
            self._sel = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
        except OSError:
            self._listener.close()
            raise
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[_Conn, None] = {}  # in accept order: the first is the oldest
        self._accept_paused_until: float | None = None
        self._jobs: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[_Conn, bytes]] = queue.SimpleQueue()
        self._stopping = False
        self._io = threading.Thread(target=self._serve, name="http", daemon=True)
        self._workers = [
            threading.Thread(target=self._work, name=f"http-worker-{i}", daemon=True)
            for i in range(self._limits.workers)
        ]

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        self._io.start()
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._stopping = True
        if self._io.is_alive():
            self._wake()
            self._io.join()
        else:
            self._close_all()
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            if worker.is_alive():
                worker.join(1.0)  # workers hold no descriptor: one stuck in respond() may stay
        self._wake_r.close()
        self._wake_w.close()

    # --- the I/O thread -------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._sel.select(self._timeout()):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._finish_rendered()
                    elif not key.data.closed:
                        self._step(key.data)
                self._expire()
        finally:
            self._close_all()

    def _timeout(self) -> float | None:
        ends = [c.deadline for c in self._conns]
        if self._accept_paused_until is not None:
            ends.append(self._accept_paused_until)
        return max(0.0, min(ends) - time.monotonic()) if ends else None

    def _accept(self) -> None:
        for _ in range(self._limits.max_connections):  # then let the others have a turn
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            except OSError as exc:
                log.warning("metrics: cannot accept connections for %.0f s: %s", _ACCEPT_PAUSE, exc)
                self._sel.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE
                return
            if len(self._conns) >= self._limits.max_connections and not self._evict():
                _reset(sock)
                continue
            self._add(sock)

    def _add(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        deadline = time.monotonic() + self._limits.head_timeout
        if self._tls is None:
            conn = _Conn(sock, _HEAD, deadline)
        else:
            try:
                tls_sock = self._tls.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            except OSError:
                sock.close()
                return
            conn = _Conn(tls_sock, _HANDSHAKE, deadline)
        self._conns[conn] = None
        self._want(conn, selectors.EVENT_READ)

    def _evict(self) -> bool:
        for states in ((_HANDSHAKE, _HEAD), (_WRITE,)):
            victim = next((c for c in self._conns if c.state in states), None)
            if victim is not None:
                log.debug("metrics: at the cap, dropping a connection in %s", victim.state)
                self._close(victim, reset=True)
                return True
        return False

    def _step(self, conn: _Conn) -> None:
        """Moves a connection on as far as it can go without blocking."""
        try:
            if conn.state == _HANDSHAKE:
                assert isinstance(conn.sock, ssl.SSLSocket)
                conn.sock.do_handshake()
                conn.state = _HEAD
            if conn.state == _HEAD:
                self._read(conn)
            if conn.state == _WRITE:
                while conn.reply:
                    conn.reply = conn.reply[conn.sock.send(conn.reply) :]
                self._close(conn)
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
        except BlockingIOError:
            self._want(
                conn, selectors.EVENT_WRITE if conn.state == _WRITE else selectors.EVENT_READ
            )
        except OSError as exc:  # ssl.SSLError included: a failed handshake, a reset
            log.debug("metrics: connection dropped: %s", exc)
            self._close(conn, reset=True)
        except Exception:  # a bug: it costs this connection, not the I/O thread and all others
            log.exception("metrics: connection dropped")
            self._close(conn, reset=True)

    def _read(self, conn: _Conn) -> None:
        # Reads until the head is in or the socket would block (BlockingIOError, SSLWantRead):
        # a TLS socket may hold decrypted bytes that the selector cannot see.
        limit = self._limits.max_head
        while (end := _head_end(conn.head)) is None and len(conn.head) <= limit:
            data = conn.sock.recv(65536)
            if not data:
                self._close(conn)
                return
            conn.head += data
        request = _parse(bytes(conn.head[:end])) if end is not None and end <= limit else None
        conn.deadline = time.monotonic() + self._limits.reply_timeout
        if request is None:
            code = 400 if end is not None and end <= limit else 431
            conn.reply, conn.state = memoryview(reply(code, phrase(code))), _WRITE
            return
        conn.request, conn.state = request, _RENDER
        self._want(conn, 0)
        self._jobs.put(conn)

    def _finish_rendered(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while not self._done.empty():
            conn, data = self._done.get()
            if not conn.closed:
                conn.reply, conn.state = memoryview(data), _WRITE
                self._step(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns if c.deadline <= now]:
            log.debug("metrics: connection timed out in %s", conn.state)
            self._close(conn, reset=True)
        if self._accept_paused_until is not None and self._accept_paused_until <= now:
            self._accept_paused_until = None
            self._sel.register(self._listener, selectors.EVENT_READ, "accept")

    def _want(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if not conn.events:
            self._sel.register(conn.sock, events, conn)
        elif not events:
            self._sel.unregister(conn.sock)
        else:
            self._sel.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: _Conn, reset: bool = False) -> None:
        if conn.closed:
            return
        conn.closed = True
        del self._conns[conn]
        self._want(conn, 0)
        if reset:
            _reset(conn.sock)
        else:
            conn.sock.close()

    def _close_all(self) -> None:
        for conn in list(self._conns):
            self._close(conn, reset=True)
        self._sel.close()
        self._listener.close()

    def _wake(self) -> None:
        # Full: a wake-up is pending anyway. Closed: the server has stopped.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # --- the workers ----------------------------------------------------------------------

    def _work(self) -> None:
        while (conn := self._jobs.get()) is not None:
            if conn.closed or conn.request is None:
                continue
            try:
                data = self._respond(conn.request)
            except Exception:
                log.exception("metrics: cannot answer %s", conn.request.path)
                data = reply(500, phrase(500))
            self._done.put((conn, data))
            self._wake()


def reply(
    code: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    headers: dict[str, str] | None = None,
    head_only: bool = False,
) -> bytes:
    """A whole response; with head_only (for HEAD), without the body."""
    lines = [
        f"HTTP/1.1 {code} {HTTPStatus(code).phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + (b"" if head_only else body)


def phrase(code: int) -> bytes:
    """A plain-text body for an error reply: 'not found\\n'."""
    return f"{HTTPStatus(code).phrase.lower()}\n".encode()


def _listen(address: tuple[str, int]) -> socket.socket:
    # The family comes from the address: "::1" needs AF_INET6, and a name may resolve to either
    # (the first answer is used).
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        *address, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen()
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    sock.close()


def _head_end(head: bytearray) -> int | None:
    """Where the head ends (after its last line break), at the first empty line."""
    ends = [i + 1 for i in (head.find(b"\n\r\n"), head.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else None


def _parse(head: bytes) -> Request | None:
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not target.startswith("/"):
        return None
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        return None
    headers: dict[str, str] = {}
    for line in filter(None, lines[1:]):
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            return None
        headers[name.lower()] = value.strip(" \t")
    return Request(method, target.split("?", 1)[0], headers)
