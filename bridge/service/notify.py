"""systemd's notification protocol (sd_notify) and the watchdog, without libsystemd.

The watchdog is pinged by the journal writer's loop -- the loop that moves lines -- so a wedged
pipeline stops the pings and systemd restarts the service; a timer thread would hide that.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._lock = threading.Lock()
        watchdog_pid = env.get("WATCHDOG_PID")
        usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        if watchdog_pid and watchdog_pid != str(os.getpid()):
            usec = 0
        self.watchdog_interval = usec / 2_000_000 if usec else 0.0
        self._next_ping = 0.0

    def notify(self, *assignments: str) -> None:
        if not self._address:
            return
        message = "\n".join(assignments).encode()
        with (
            self._lock,
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
            contextlib.suppress(OSError),  # systemd went away; nothing useful to do
        ):
            sock.sendto(message, self._address)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        self.notify(
            "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping: writing what was read, saving positions")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def heartbeat(self) -> None:
        """Pings the watchdog when half its interval has passed; cheap to call per batch."""
        if not self.watchdog_interval:
            return
        now = time.monotonic()
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog_interval
            self.notify("WATCHDOG=1")
