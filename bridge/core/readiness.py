"""Waiting for descriptors to become readable, whatever their number.

select() refuses descriptors numbered 1024 and above (FD_SETSIZE), and the bridge may hold
thousands: every log file it keeps for a reader is one, and a container decides how many of
its rotated files are waiting. So the bridge waits with poll(), which has no such limit.
"""

from __future__ import annotations

import select
from collections.abc import Iterable

_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL


def readable(fds: Iterable[int], timeout: float | None = 0.0) -> list[int]:
    """The descriptors of `fds` that are readable (or at their end, or invalid) within
    `timeout` seconds (None: no limit), in no particular order."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    wait = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return [fd for fd, events in poller.poll(wait) if events & _READABLE]
