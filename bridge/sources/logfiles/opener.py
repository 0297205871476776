"""The opener: a small process of its own that opens each new log file the moment it appears.

dockerd deletes a rotated file two rotations after creating it, within milliseconds under a
fast writer, and a file opened before that stays readable. A thread of the bridge opening it
shares the interpreter lock with busy readers and the writer, and was measured to miss files.
This process runs the moment inotify reports a file, whatever the bridge is doing: it does
nothing else, in real time within a budget (realtime.py). Where real time is refused, at the
nice value the unit's LimitNICE= allows; without either, the bridge's own priority. `ready`
says which.

It runs the bridge's own LogFileWatcher (watch.py) with events that forward (`_Forwarder`):
each descriptor goes to the bridge over a Unix socket (SCM_RIGHTS) and is closed here at once.
In flight the kernel keeps the file open, so however late the bridge takes it, its bytes are
there: nothing is held here, and what is held there is bounded (rotation/replaced.py).
The bridge's LogFileWatcher, given an `Opener`, takes its files from it instead of opening
them, and still watches on its own for wake-ups and removals.

Protocol: SOCK_SEQPACKET, one JSON object per message.
- opener -> bridge: {"e": "open", "cid", "path", "kind", "sub", "created", "configs"} with
  the log's descriptor and a memfd with the bytes of each config file `configs` (two booleans)
  says is there (a message stays small whatever their size);
  {"e": "created" | "missed", "cid"}; {"e": "open_error", "cid", "path", "reason"};
  {"e": "overflow"}; {"e": "watch_error", "errno"}; {"e": "ready", "nice", "realtime"} once
  the files already there were sent; {"e": "synced", "n"}.
- bridge -> opener: {"sync": n}, answered once every event queued before it was handled.
Messages keep the watcher's order. The opener exits when the bridge closes its end, and when a
message cannot be sent (a file it could not hand over would be a silent gap): the bridge then
takes every message that came before the end (OpenerGone.received: the files in them may have
no name left), and opens files itself, after a rescan.
"""

from __future__ import annotations

import array
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.core.readiness import readable
from bridge.sources.logfiles import realtime
from bridge.sources.logfiles.layout import DOCKER, Layout, podman
from bridge.sources.logfiles.safe_open import CONFIG_MAX_BYTES, close_quietly
from bridge.sources.logfiles.watch import LogFileWatcher, OpenedLog, OpenerGone, OpenerMessage

log = logging.getLogger(__name__)

NICE = -15  # the opener's nice value, where the unit's LimitNICE= allows it
_MAX_MESSAGE = 64 * 1024  # a path and a reason are bounded by the file system
_MAX_FDS = 3  # the log and its two config files
_START_SECONDS = 30.0


@dataclass(slots=True)
class Message:
    fields: dict[str, Any]
    fds: list[int] = field(default_factory=list)

    @property
    def event(self) -> str:
        return str(self.fields.get("e", ""))

    def close(self) -> None:
        for fd in self.fds:
            close_quietly(fd)
        self.fds = []


class Opener:
    """The bridge's end: starts the process and receives what it opened. Used by one thread
    (the bridge's watcher thread) after start()."""

    def __init__(self, root: str, layout: Layout, config_max_bytes: int = CONFIG_MAX_BYTES) -> None:
        self._root = root
        self._layout = layout
        self._config_max = config_max_bytes
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._syncs = 0
        self.nice: int | None = None  # the opener's nice value, from its ready message
        self.realtime = False  # it runs under SCHED_RR (from its ready message)

    def start(self, timeout: float = _START_SECONDS) -> list[OpenerMessage]:
        """Starts the process; returns what it opened at its start (the files already there).
        Raises OpenerGone."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-m",
                    __name__,
                    str(theirs.fileno()),
                    self._root,
                    self._layout.engine,
                    self._layout.containers,
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as e:
            ours.close()
            raise OpenerGone(f"cannot start the log file opener: {e.strerror}") from None
        finally:
            theirs.close()
        self._sock = ours
        return self._until(lambda m: m.event == "ready", timeout)

    @property
    def priority(self) -> str:
        """How the process is scheduled, for a log line."""
        if self.realtime:
            return f"real-time priority {realtime.RT_PRIORITY}"
        return f"nice {self.nice}"

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def receive(self) -> list[OpenerMessage]:
        """What has arrived, without waiting. Raises OpenerGone."""
        out: list[OpenerMessage] = []
        try:
            while (m := self._recv(block=False)) is not None:
                out.append(m)
        except OpenerGone as e:
            raise OpenerGone(str(e), out) from None  # what came before it is still handed over
        return out

    def sync(self, timeout: float) -> list[OpenerMessage]:
        """Everything the opener sent for the events queued before this call, or what came
        within `timeout` (a slow opener is no gone one: its answer is taken as a message
        later). Raises OpenerGone."""
        if self._sock is None:
            raise OpenerGone("the log file opener is stopped")
        self._syncs += 1
        n = self._syncs
        try:
            self._sock.send(json.dumps({"sync": n}).encode())
        except OSError as e:
            raise OpenerGone(f"the log file opener is gone: {e.strerror}") from None
        return self._until(
            lambda m: m.event == "synced" and m.fields.get("n") == n, timeout, fatal=False
        )

    def opened(self, message: OpenerMessage) -> OpenedLog:
        """An "open" message as the watcher's OpenedLog. Raises ValueError."""
        assert isinstance(message, Message)
        try:
            return opened_log(message, self._config_max)
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(str(e)) from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the opener sees EOF and exits
            self._sock = None
        if self._process is not None:
            try:
                self._process.wait(2.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def _until(
        self, last: Callable[[Message], bool], timeout: float, fatal: bool = True
    ) -> list[OpenerMessage]:
        deadline = time.monotonic() + timeout
        out: list[OpenerMessage] = []
        while True:
            try:
                m = self._recv(block=True, timeout=max(0.0, deadline - time.monotonic()))
            except OpenerGone as e:
                raise OpenerGone(str(e), out) from None  # what came before it is the caller's
            if m is None and not fatal:
                return out
            if m is None:
                for got in out:
                    got.close()
                raise OpenerGone("the log file opener did not answer in time")
            if last(m):
                if m.event == "ready":
                    self.nice = m.fields.get("nice")
                    self.realtime = m.fields.get("realtime") is True
                return out
            out.append(m)

    def _recv(self, block: bool, timeout: float = 0.0) -> Message | None:
        sock = self._sock
        if sock is None:
            raise OpenerGone("the log file opener is stopped")
        if block and not readable([sock.fileno()], timeout):
            return None
        try:
            data, ancdata, _, _ = sock.recvmsg(
                _MAX_MESSAGE, socket.CMSG_SPACE(_MAX_FDS * 4), socket.MSG_DONTWAIT
            )
        except BlockingIOError:
            return None
        except OSError as e:
            raise OpenerGone(f"the log file opener is gone: {e.strerror}") from None
        fds = _fds(ancdata)
        if not data:
            for fd in fds:
                close_quietly(fd)
            code = self._process.poll() if self._process is not None else None
            raise OpenerGone(f"the log file opener exited (status {code})")
        try:
            fields = json.loads(data)
            if not isinstance(fields, dict):
                raise ValueError("not an object")
        except ValueError:
            for fd in fds:
                close_quietly(fd)
            raise OpenerGone("the log file opener sent a malformed message") from None
        return Message(fields, fds)


def opened_log(m: Message, config_max_bytes: int) -> OpenedLog:
    """An "open" message as the watcher's OpenedLog; the config memfds are read and closed.
    Raises KeyError, ValueError, IndexError for a malformed one (its descriptors closed)."""
    try:
        f = m.fields
        fd, *configs = m.fds
        present = [bool(p) for p in f["configs"]][:2]
        if sum(present) != len(configs):
            raise ValueError("the config descriptors do not match the message")
        read = iter([_read_memfd(c, config_max_bytes) for c in configs])
        texts = [next(read) if p else None for p in present] + [None, None]
        return OpenedLog(
            str(f["cid"]), fd, str(f["path"]), f["kind"], bool(f["created"]), texts[0], texts[1]
        )
    except (KeyError, ValueError, IndexError, TypeError):
        m.close()
        raise
    finally:
        for c in m.fds[1:]:
            close_quietly(c)


def _read_memfd(fd: int, max_bytes: int) -> bytes | None:
    """None when unreadable or too big: a config is optional, the log it came with is not."""
    try:
        data = os.pread(fd, max_bytes + 1, 0)
    except OSError:
        return None
    return data if len(data) <= max_bytes else None


def _fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


# --- the opener process -----------------------------------------------------------------------


class _Forwarder:
    """LogFileEvents that send each event to the bridge (the watcher's thread)."""

    def __init__(self, sock: socket.socket, layout: Layout) -> None:
        self._sock = sock
        self._layout = layout

    def send(self, fields: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(fields).encode()
        try:
            if fds:
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
                self._sock.sendmsg([data], rights)
            else:
                self._sock.send(data)
        except OSError as e:
            log.error("cannot hand over to the bridge (%s): exiting", e.strerror)
            os._exit(70)  # from the watcher's thread too: see the module docstring

    def on_open(self, opened: OpenedLog) -> None:
        memfds = [
            _memfd(text) if text is not None else None
            for text in (opened.config, opened.hostconfig)
        ]
        configs = [fd for fd in memfds if fd is not None]
        sub = opened.kind == self._layout.sub_kind and self._layout.top_kind != opened.kind
        fields = {
            "e": "open",
            "cid": opened.container_id,
            "path": opened.path,
            "kind": opened.kind,
            "sub": sub,
            "created": opened.created,
            "configs": [fd is not None for fd in memfds],  # which memfds follow the log's
        }
        try:
            self.send(fields, [opened.fd, *configs])
        finally:
            for fd in (opened.fd, *configs):
                close_quietly(fd)

    def on_created(self, container_id: str) -> None:
        self.send({"e": "created", "cid": container_id})

    def on_open_error(self, container_id: str, path: str, reason: str) -> None:
        self.send({"e": "open_error", "cid": container_id, "path": path, "reason": reason})

    def on_missed(self, container_id: str) -> None:
        self.send({"e": "missed", "cid": container_id})

    def on_removed(self, container_id: str) -> None:
        pass  # the bridge's own watcher sees removals

    def on_overflow(self) -> None:
        self.send({"e": "overflow"})

    def on_watch_error(self, errno_name: str) -> None:
        self.send({"e": "watch_error", "errno": errno_name})


def _memfd(text: bytes) -> int | None:
    """The bytes in an anonymous file: a message stays small whatever they are. None when it
    cannot be made (EMFILE, ENOMEM): the log goes over without that config, never not at all."""
    try:
        fd = os.memfd_create("config", os.MFD_CLOEXEC)
    except OSError:
        return None
    try:
        os.write(fd, text)
    except OSError:
        os.close(fd)
        return None
    return fd


def _layout(engine: str, containers: str) -> Layout:
    if engine == DOCKER.engine:
        return DOCKER
    return podman(containers.removesuffix("-containers"))


def main(argv: list[str]) -> int:
    """`python -m bridge.sources.logfiles.opener FD ROOT ENGINE CONTAINERS`"""
    logging.basicConfig(level=logging.INFO, format="log file opener: %(levelname)s %(message)s")
    sock = socket.socket(fileno=int(argv[0]))
    layout = _layout(argv[2], argv[3])
    # This thread's, inherited by the watcher's thread started below. Without LimitNICE (or
    # root), the bridge's own priority: `ready` reports which.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    forwarder = _Forwarder(sock, layout)
    watcher = LogFileWatcher(argv[1], forwarder, layout=layout)
    stop = threading.Event()
    try:
        watcher.start()  # the files already there: a long scan at the normal policy
        realtime.govern(stop)  # before enter(): in real time itself, it always gets to run
        rt = realtime.enter()
        if not rt:
            stop.set()  # nothing to govern (its first look is a window away)
        forwarder.send({"e": "ready", "nice": os.getpriority(os.PRIO_PROCESS, 0), "realtime": rt})
        while data := sock.recv(_MAX_MESSAGE):
            request = json.loads(data)
            watcher.sync(5.0)
            forwarder.send({"e": "synced", "n": request.get("sync")})
    except (OSError, ValueError, AttributeError):
        pass  # the bridge is gone, or spoke nonsense: either way, stop
    finally:
        stop.set()
        watcher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
