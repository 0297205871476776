from __future__ import annotations

import threading
import time

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo, encode_pairs
from bridge.core.queue import Batch, PendingQueue


def handle() -> ContainerHandle:
    info = ContainerInfo(id="a" * 64, name="web", image_name="img", image_id="sha256:b")
    return ContainerHandle.create(info, encode_pairs([("CONTAINER_NAME", "web")]), Cursor())


def waiter(queue: PendingQueue) -> tuple[threading.Event, list[bool]]:
    """A writer waiting for an item; `woke` is set once it returns."""
    woke, came = threading.Event(), []
    threading.Thread(target=lambda: (came.append(queue.wait(5)), woke.set()), daemon=True).start()
    deadline = time.monotonic() + 5
    while not queue._not_empty._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)  # in its wait before anything is put
    return woke, came


def test_unannounced_items_wake_the_writer_once_announced_and_it_need_not_gather() -> None:
    queue = PendingQueue(1000)
    h = handle()
    woke, came = waiter(queue)
    queue.put(Batch(h, [], 10), announce=False)
    queue.put(Batch(h, [], 10), announce=False)
    assert not woke.wait(0.2)  # a read loop's pass is still going
    queue.announce()
    assert woke.wait(1) and came == [True]
    assert queue.whole
    assert len(queue.get_many(0, 1000)) == 2
    queue.announce()  # nothing new: no wake-up
    woke, came = waiter(queue)
    assert not woke.wait(0.2)
    queue.put(Batch(h, [], 10))  # announced as it is put: the writer may gather more
    assert woke.wait(1) and not queue.whole


def test_a_reader_that_must_wait_for_room_announces_what_it_put_first() -> None:
    queue = PendingQueue(100)
    h = handle()
    woke, _ = waiter(queue)
    queue.put(Batch(h, [], 80), announce=False)
    assert not woke.wait(0.1)
    done = threading.Event()
    threading.Thread(
        target=lambda: (queue.put(Batch(h, [], 80), announce=False), done.set()), daemon=True
    ).start()
    assert woke.wait(1)  # else the writer sleeps while the reader waits for it
    assert len(queue.get_many(0, 0)) == 1
    queue.release(80)
    assert done.wait(1)
