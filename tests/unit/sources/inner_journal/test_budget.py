"""The worker budget: FIFO slots, turns, a stop while waiting, its metrics and its one line."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.sources.inner_journal import budget as budget_module
from bridge.sources.inner_journal.budget import WorkerBudget
from bridge.sources.inner_journal.follower import InnerJournalFollower
from bridge.telemetry import Telemetry

from .journals import MACHINE_ID, entry, journal_dir, needs_journal_remote, write
from .test_follower import FAST, Run


def value(telemetry: Telemetry, name: str, labels: dict[str, str] | None = None) -> float:
    got = telemetry.registry.get_sample_value(name, labels or {})
    return 0.0 if got is None else got


def test_slots_are_given_in_order_and_never_more_than_the_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry = Telemetry(CollectorRegistry())
    budget = WorkerBudget(2, telemetry)
    tickets = [budget.ticket() for _ in range(5)]
    assert budget.acquire(tickets[0], lambda: False)
    assert budget.acquire(tickets[1], lambda: False)
    order: list[int] = []

    def wait(ticket: int) -> None:
        if budget.acquire(ticket, lambda: False):
            order.append(ticket)

    with caplog.at_level(logging.WARNING, logger="bridge.sources.inner_journal.budget"):
        threads = []
        for ticket in tickets[2:]:
            threads.append(threading.Thread(target=wait, args=(ticket,)))
            threads[-1].start()
            time.sleep(0.05)  # queued in this order
        assert budget.waiting == 3
        assert value(telemetry, "journald_bridge_inner_journal_workers", {"state": "waiting"}) == 3
        for holder in (tickets[0], tickets[1], tickets[2], tickets[3]):
            budget.release(holder)
            time.sleep(0.05)
            assert budget.running <= 2
        for thread in threads:
            thread.join(5)
    assert order == tickets[2:]
    lines = [r for r in caplog.records if "max_workers" in r.getMessage()]
    assert len(lines) == 1  # one line when the budget is reached, not one per wait
    assert value(telemetry, "journald_bridge_inner_journal_worker_waits_total") == 3
    assert value(telemetry, "journald_bridge_inner_journal_workers", {"state": "running"}) == 1


def test_a_stop_ends_the_wait_and_leaves_the_queue() -> None:
    budget = WorkerBudget(1)
    first, second, third = budget.ticket(), budget.ticket(), budget.ticket()
    assert budget.acquire(first, lambda: False)
    stop = threading.Event()
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(budget.acquire(second, stop.is_set)))
    thread.start()
    time.sleep(0.1)
    stop.set()
    thread.join(2)
    assert results == [False] and budget.waiting == 0
    budget.release(first)
    assert budget.acquire(third, lambda: False)  # the stopped one holds nobody up


def test_a_turn_ends_only_when_others_wait_and_it_was_long_enough() -> None:
    budget = WorkerBudget(1, turn_seconds=0.2)
    first, second = budget.ticket(), budget.ticket()
    assert budget.acquire(first, lambda: False)
    time.sleep(0.3)
    assert not budget.should_yield(first)  # nobody waits
    thread = threading.Thread(target=budget.acquire, args=(second, lambda: False))
    thread.start()
    time.sleep(0.1)
    assert budget.should_yield(first)
    budget.release(first)
    thread.join(2)
    assert not budget.should_yield(second)  # its turn has just begun


def test_one_budget_per_bridge_shared_by_its_engines() -> None:
    telemetry = Telemetry(CollectorRegistry())
    shared = budget_module.shared(telemetry, 4)
    assert budget_module.shared(telemetry, 4) is shared
    assert budget_module.shared(Telemetry(CollectorRegistry()), 4) is not shared
    with pytest.raises(ValueError):
        WorkerBudget(0)


@needs_journal_remote
def test_more_journals_than_slots_are_all_read_in_turns(tmp_path: Path) -> None:
    budget = WorkerBudget(1, turn_seconds=0.5)
    runs = []
    for n in range(3):
        root = tmp_path / f"root{n}"
        write(journal_dir(root) / "system.journal", [entry(i, f"c{n} line {i}") for i in (1, 2)])
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        runs.append(Run(InnerJournalFollower(fd, name=f"c{n}", options=FAST, budget=budget)))
    try:
        most = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(len(r.messages()) for r in runs) < 2:
            for run in runs:
                with contextlib.suppress(AssertionError):
                    run.wait(lambda seen: False, timeout=0.05)  # takes what arrived
            most = max(most, sum(r.follower.worker_pid is not None for r in runs))
        assert [r.messages() for r in runs] == [
            [f"c{n} line {i}".encode() for i in (1, 2)] for n in range(3)
        ]
        write(tmp_path / "root0" / "var/log/journal" / MACHINE_ID / "system.journal", [entry(3)])
        assert (
            runs[0].wait_messages(3)[-1] == b"line 3"
        )  # its next turn reads on, from where it was
    finally:
        for run in runs:
            run.finish()
    assert most <= 1
    assert sum(r.follower.stats.turns for r in runs) >= 2
    assert all(r.follower.stats.restarts == 0 for r in runs)  # a turn is not a failure


def test_a_journal_in_use_goes_before_idle_ones_and_nobody_waits_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    budget = WorkerBudget(1, turn_seconds=1.0)
    holder, idle, busy = budget.ticket(), budget.ticket(), budget.ticket()
    assert budget.acquire(holder, lambda: False)
    order: list[int] = []

    def wait(ticket: int, productive: bool) -> None:
        if budget.acquire(ticket, lambda: False, productive=productive):
            order.append(ticket)
            budget.release(ticket)

    threads = [
        threading.Thread(target=wait, args=(idle, False)),
        threading.Thread(target=wait, args=(busy, True)),
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    budget.release(holder)
    for thread in threads:
        thread.join(5)
    assert order == [busy, idle]  # the idle one asked first, the busy one went first

    monkeypatch.setattr(budget_module, "AGED_TURNS", 0)  # everyone has waited long enough
    assert budget.acquire(holder, lambda: False)
    order.clear()
    threads = [
        threading.Thread(target=wait, args=(idle, False)),
        threading.Thread(target=wait, args=(busy, True)),
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    budget.release(holder)
    for thread in threads:
        thread.join(5)
    assert order == [idle, busy]  # left behind too long: first in line again


def test_an_idle_holder_yields_sooner() -> None:
    budget = WorkerBudget(1, turn_seconds=10.0, idle_seconds=0.2)
    holder, waiter = budget.ticket(), budget.ticket()
    assert budget.acquire(holder, lambda: False)
    thread = threading.Thread(target=budget.acquire, args=(waiter, lambda: False))
    thread.start()
    time.sleep(0.3)
    assert budget.should_yield(holder, idle=True)
    assert not budget.should_yield(holder, idle=False)
    budget.release(holder)
    thread.join(2)
