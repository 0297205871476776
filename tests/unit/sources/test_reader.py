"""ReaderThread: started once however many callers race to start it, and a bug in a reader is
one log line, never a traceback (in the log, or from threading's own bookkeeping)."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from prometheus_client import CollectorRegistry

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo
from bridge.core.queue import PendingQueue
from bridge.sources.reader import ReaderThread
from bridge.telemetry import Telemetry


class Counting(ReaderThread):
    def __init__(self, fail: bool = False) -> None:
        info = ContainerInfo(id="a" * 64, name="web", image_name="img", image_id="sha256:b")
        handle = ContainerHandle.create(info, b"", Cursor())
        super().__init__(handle, PendingQueue(1 << 20), Telemetry(CollectorRegistry()), 1 << 20)
        self.runs = 0
        self.fail = fail

    def _run(self) -> None:
        self.runs += 1
        if self.fail:
            raise KeyError("a bug")


def test_callers_that_race_to_start_a_reader_start_it_once(monkeypatch: Any) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    for _ in range(50):
        reader = Counting()
        gate = threading.Barrier(4)

        def start(r: Counting = reader, g: threading.Barrier = gate) -> None:
            g.wait()
            r.start()

        callers = [threading.Thread(target=start) for _ in range(4)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(5)
        reader.join(5)
        assert reader.runs == 1 and reader.finished
    assert unraisable == []


def test_a_readers_exception_is_one_log_line(caplog: Any) -> None:
    caplog.set_level(logging.INFO)
    reader = Counting(fail=True)
    reader.start()
    reader.join(5)
    failures = [r for r in caplog.records if "reader failed" in r.getMessage()]
    assert len(failures) == 1 and not failures[0].exc_info
    assert "KeyError" in failures[0].getMessage() and "Traceback" not in caplog.text
    assert reader.finished
