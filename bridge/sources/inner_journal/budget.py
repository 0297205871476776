"""How many inner-journal worker processes run at once, across all containers and engines.

Each worker is a Python process of about 10 MiB of its own memory, in the bridge's cgroup:
their number, not the number of containers, must decide what inner journals cost. Invariants:

- At most `slots` workers hold a slot at once. A follower takes one before it starts a worker
  and gives it back when that worker ends (`release` is idempotent).
- Slots are given in the order they were asked for (FIFO), except that a follower whose last
  worker read entries goes before those whose did not (a file that only looks like a journal,
  a quiet one): a journal in use waits for one slot to free up, not for every fake ahead of it.
  A waiter left behind that way for `AGED_TURNS` turns goes first, so no container waits
  forever.
- Turns: a follower that has held its slot `turn_seconds` while others wait gives it back and
  asks again (`should_yield`); one whose worker has read nothing yet does so after
  `idle_seconds` (a fake journal holds a slot for seconds, not for a whole turn). Its worker
  is stopped, not failed; the next one resumes after the last entry read, so a turn costs
  latency, never an entry.
- The running and waiting numbers are metrics; the first wait logs one line, and so does the
  next one once nobody has waited for `QUIET_SECONDS`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the worker process imports this package: no prometheus_client for it
    from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 16
TURN_SECONDS = 30.0
IDLE_SECONDS = 5.0
AGED_TURNS = 4
QUIET_SECONDS = 600.0
_WAIT_STEP = 0.25  # how soon a waiter notices that it was told to stop


class WorkerBudget:
    """See the module."""

    def __init__(
        self,
        slots: int = DEFAULT_SLOTS,
        telemetry: Telemetry | None = None,
        *,
        turn_seconds: float = TURN_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        if slots < 1:
            raise ValueError("the worker budget needs at least one slot")
        self.slots = slots
        self.turn_seconds = turn_seconds
        self.idle_seconds = min(idle_seconds, turn_seconds)
        self._telemetry = telemetry
        self._lock = threading.Condition()
        self._holders: dict[int, float] = {}  # ticket -> when its slot was given
        self._queue: deque[tuple[int, bool, float]] = deque()  # ticket, productive, since
        self._tickets = itertools.count(1)
        # when the queue last emptied; None while someone waits, 0.0 before anyone ever did
        self._quiet_since: float | None = 0.0

    def ticket(self) -> int:
        """A follower's number in this budget (one per follower, for its whole life)."""
        return next(self._tickets)

    def acquire(
        self, ticket: int, stopping: Callable[[], bool], *, productive: bool = False
    ) -> bool:
        """Waits for a slot (see the module for the order; `productive`: the follower's last
        worker read entries); False when `stopping()` turned true first."""
        with self._lock:
            if ticket in self._holders:
                return True
            if len(self._holders) < self.slots and not self._queue:
                self._give(ticket)
                return True
            waiter = (ticket, productive, time.monotonic())
            self._queue.append(waiter)
            self._waited()
            self._update()
            try:
                while not (self._next_in_line() == ticket and len(self._holders) < self.slots):
                    if stopping():
                        return False
                    self._lock.wait(_WAIT_STEP)
                self._queue.remove(waiter)
                self._give(ticket)
                self._lock.notify_all()  # the next in line may fit as well
                return True
            finally:
                if waiter in self._queue:
                    self._queue.remove(waiter)
                    self._lock.notify_all()
                self._update()

    def _next_in_line(self) -> int:
        """The waiter to get the next free slot: the oldest one left behind for too long, else
        the first productive one, else the first."""
        aged = time.monotonic() - AGED_TURNS * self.turn_seconds
        first = self._queue[0]
        if first[2] <= aged:
            return first[0]
        return next((t for t, productive, _ in self._queue if productive), first[0])

    def release(self, ticket: int) -> None:
        with self._lock:
            if self._holders.pop(ticket, None) is not None:
                self._lock.notify_all()
                self._update()

    def should_yield(self, ticket: int, idle: bool = False) -> bool:
        """Whether this holder's turn is over: others wait and it has had `turn_seconds`, or
        `idle_seconds` when it is `idle` (its worker has read nothing yet)."""
        with self._lock:
            given = self._holders.get(ticket)
            turn = self.idle_seconds if idle else self.turn_seconds
            return given is not None and bool(self._queue) and time.monotonic() - given >= turn

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._holders)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._queue)

    def _give(self, ticket: int) -> None:
        self._holders[ticket] = time.monotonic()
        self._update()

    def _waited(self) -> None:
        """A follower has to wait: count it; log it if nobody had to for a while."""
        now = time.monotonic()
        if self._telemetry is not None:
            self._telemetry.inner_journal_worker_waited()
        quiet = self._quiet_since
        self._quiet_since = None
        if quiet is not None and (quiet == 0.0 or now - quiet >= QUIET_SECONDS):
            log.warning(
                "inner journals: %d reader processes run, the most allowed "
                "([inner_journal] max_workers); the other containers' journals are read in "
                "turns of %g s (%g s for one that reads nothing)",
                len(self._holders),
                self.turn_seconds,
                self.idle_seconds,
            )

    def _update(self) -> None:
        if not self._queue and self._quiet_since is None:
            self._quiet_since = time.monotonic()
        if self._telemetry is not None:
            self._telemetry.inner_journal_workers(len(self._holders), len(self._queue))


_shared: weakref.WeakKeyDictionary[Telemetry, WorkerBudget] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def shared(telemetry: Telemetry, slots: int = DEFAULT_SLOTS) -> WorkerBudget:
    """The budget of every engine that reports to `telemetry` (one per bridge). The first
    caller's `slots` count; a later caller with another number changes it for all."""
    with _shared_lock:
        budget = _shared.get(telemetry)
        if budget is None:
            budget = _shared[telemetry] = WorkerBudget(slots, telemetry)
        elif budget.slots != slots:
            with budget._lock:
                budget.slots = slots
                budget._lock.notify_all()
        return budget
