from __future__ import annotations

import threading
import time

from bridge.sources.keyed import KeyedExecutor


def test_tasks_of_one_key_run_in_order_and_one_at_a_time():
    executor = KeyedExecutor(workers=4, max_pending=1000, name="t")
    seen: list[int] = []
    running = []

    def task(i: int):
        def run():
            running.append(i)
            assert len(running) == 1  # never two of one key at once
            time.sleep(0.001)
            seen.append(i)
            running.remove(i)

        return run

    for i in range(50):
        assert executor.submit("a", task(i))
    executor.shutdown(wait=True)
    assert seen == list(range(50))


def test_a_key_that_blocks_holds_up_no_other_key():
    executor = KeyedExecutor(workers=2, max_pending=100, name="t")
    release = threading.Event()
    done = threading.Event()
    executor.submit("slow", release.wait)
    executor.submit("fast", done.set)
    assert done.wait(2)
    release.set()
    executor.shutdown(wait=True)


def test_pending_tasks_are_bounded_and_a_failing_task_harms_no_other(caplog):
    executor = KeyedExecutor(workers=1, max_pending=3, name="t")
    release = threading.Event()
    ran: list[str] = []
    executor.submit("a", release.wait)
    time.sleep(0.05)  # the worker took it: nothing pending
    assert executor.submit("a", lambda: 1 / 0)
    assert executor.submit("a", lambda: ran.append("after"))
    assert executor.submit("b", lambda: ran.append("b"))
    assert not executor.submit("c", lambda: ran.append("refused"))
    release.set()
    executor.shutdown(wait=True)
    assert sorted(ran) == ["after", "b"]
    assert "ZeroDivisionError" in caplog.text or "division by zero" in caplog.text
    assert not executor.submit("d", lambda: None)  # closed
