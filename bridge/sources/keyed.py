"""Work for many containers on a few threads, in order per container.

Discovery must never wait on one container: an inspect that takes seconds (a busy engine, a
container being removed) would hold up every other container's start event behind it. So each
event becomes a task keyed by container id, run on a small pool. A key's tasks run one at a
time, in the order they were submitted (create before start before destroy); different keys run
in parallel.

Bounds: at most `max_pending` tasks wait in all. Past that a task is refused (`submit` returns
False) and the caller relies on the periodic listing, which finds whatever an event would have.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

Task = Callable[[], object]


class KeyedExecutor:
    def __init__(self, workers: int, max_pending: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Task]] = {}  # a key is here while it has work
        self._pending = 0
        self._closed = False

    def submit(self, key: str, task: Task) -> bool:
        """Queues `task` after the key's earlier ones; False when refused (full or closed)."""
        with self._lock:
            if self._closed or self._pending >= self._max_pending:
                return False
            self._pending += 1
            queue = self._queues.get(key)
            if queue is not None:  # a worker is on this key: it takes the task in turn
                queue.append(task)
                return True
            self._queues[key] = deque([task])
        self._pool.submit(self._drain, key)
        return True

    def _drain(self, key: str) -> None:
        while True:
            with self._lock:
                queue = self._queues[key]
                if not queue:
                    del self._queues[key]
                    return
                task = queue.popleft()
                self._pending -= 1
            try:
                task()
            except Exception as exc:  # one container's task must not end the others'
                log.exception("container %s: %s", key[:12], exc)

    def shutdown(self, wait: bool = True) -> None:
        """Refuses new tasks; with `wait`, lets queued ones finish."""
        with self._lock:
            self._closed = True
            if not wait:
                for queue in self._queues.values():
                    self._pending -= len(queue)
                    queue.clear()
        self._pool.shutdown(wait=wait)
