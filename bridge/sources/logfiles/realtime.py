"""Real time for the log file opener (opener.py), and the budget that keeps it a small share.

Why real time: dockerd deletes a rotated file two rotations after creating it, a few
milliseconds under a fast writer, and a file is safe once opened. At nice -15 a loaded host
still left the opener queued for longer than that; under SCHED_RR, at its lowest priority, it
runs the moment inotify reports a file. The unit's LimitRTPRIO=1 grants it without a
capability.

Why a budget: the opener's work comes from the engine's file operations, and whoever runs a
container chooses its log options (a tiny max-size rotates at every few lines). Real-time work
preempts every normal task on its CPU, so a container could otherwise buy real-time CPU on
the host for as long as it rotates. `Budget` holds it to `SHARE` of a CPU per `WINDOW_SECONDS`:
past that, the opener runs at the normal policy (its nice value) until a window stays under
half of it. Losing real time under such a flood costs only that container's fastest files
(counted as rotation gaps), never the host.

Invariants:
- Real time only with the kernel's bound in place first: RLIMIT_RTTIME stops a thread that
  runs on without blocking for `RT_SECONDS` (SIGKILL: the bridge then opens files itself).
- SCHED_RESET_ON_FORK: nothing the opener starts inherits real time.
- `Budget` is pure: it is given the CPU time used and reads no clock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

RT_PRIORITY = 1  # SCHED_RR's lowest: ahead of every normal task, behind the kernel's own
RT_SECONDS = 2  # RLIMIT_RTTIME: CPU time without blocking before the kernel stops it
SHARE = 0.2  # of a CPU, in real time, per window; past it, the normal policy for a while
WINDOW_SECONDS = 1.0


class Budget:
    """Whether the opener may run in real time, from the CPU time it used per window."""

    def __init__(self, share: float = SHARE) -> None:
        self._share = share
        self.realtime = True
        self.demotions = 0  # windows over the share, while in real time

    def window(self, cpu_seconds: float, seconds: float) -> bool | None:
        """One window's use. Returns the policy to switch to (True: real time), or None to
        stay as it is."""
        used = cpu_seconds / seconds if seconds > 0 else 0.0
        if self.realtime and used > self._share:
            self.realtime = False
            self.demotions += 1
            return False
        if not self.realtime and used < self._share / 2:
            self.realtime = True
            return True
        return None


def _threads() -> list[int]:
    return [int(tid) for tid in os.listdir("/proc/self/task")]


def _set(tids: Iterable[int], realtime: bool) -> None:
    if realtime:
        policy, priority = os.SCHED_RR | os.SCHED_RESET_ON_FORK, RT_PRIORITY
    else:
        policy, priority = os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, 0
    for tid in tids:
        os.sched_setscheduler(tid, policy, os.sched_param(priority))


def enter() -> bool:
    """Every thread of this process under SCHED_RR, once RLIMIT_RTTIME is in place. False
    where either is refused (the unit's LimitRTPRIO= or RestrictRealtime=, or not root)."""
    bound = RT_SECONDS * 1_000_000  # microseconds
    try:
        hard = resource.getrlimit(resource.RLIMIT_RTTIME)[1]
        if hard == resource.RLIM_INFINITY or hard > bound:  # lowering needs no privilege
            resource.setrlimit(resource.RLIMIT_RTTIME, (bound, bound))
        _set(_threads(), True)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            _set(_threads(), False)  # never half in real time
        return False
    return True


def govern(stop: threading.Event, budget: Budget | None = None) -> threading.Thread:
    """Starts a thread (of the normal policy: SCHED_RESET_ON_FORK) that applies `budget` to
    this process's CPU time, window after window, until `stop` is set."""
    budget = budget or Budget()

    def run() -> None:
        last_cpu, last = time.process_time(), time.monotonic()
        while not stop.wait(WINDOW_SECONDS):
            cpu, now = time.process_time(), time.monotonic()
            switch = budget.window(cpu - last_cpu, now - last)
            last_cpu, last = cpu, now
            if switch is None:
                continue
            try:
                _set(_threads(), switch)
            except OSError as e:
                log.warning("cannot change the opener's scheduling: %s", e.strerror)
                return
            if not switch and budget.demotions == 1:  # once: a flood comes and goes
                log.warning(
                    "the opener used more than %.0f%% of a CPU in real time: normal priority"
                    " until the flood of new log files ebbs",
                    SHARE * 100,
                )

    thread = threading.Thread(target=run, name="opener-budget", daemon=True)
    thread.start()
    return thread
