from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge.config import Config
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo
from bridge.core.state import ContainerState, State
from bridge.sources.handles import HandleFactory
from bridge.telemetry import Telemetry

FIRST_RUN = 1_000


class FakeJournal:
    """What the journal read-back found: positions per container."""

    def __init__(self, found: dict[str, dict[int, tuple[int, int]]]) -> None:
        self.found = found

    def positions(self, container_id: str) -> dict[int, tuple[int, int]]:
        return self.found.get(container_id, {})

    def inner_position(self, container_id: str) -> dict[str, object] | None:
        return None


NO_ENTRIES: Any = FakeJournal({})


def info(created_ns: int, cid: str = "a" * 64) -> ContainerInfo:
    return ContainerInfo(
        id=cid,
        name="web",
        image_name="busybox",
        image_id="sha256:" + "0" * 64,
        labels={},
        env={},
        tty=False,
        log_driver="json-file",
        created_ns=created_ns,
    )


def factory(state: State, backlog: str = "none") -> HandleFactory:
    config = Config.model_validate({"forward": {"backlog": backlog}})
    return HandleFactory(config, state.points("docker", 0), Telemetry(CollectorRegistry()))


def test_a_container_never_seen_is_read_from_its_first_line():
    handle = factory(State(FIRST_RUN)).build(info(FIRST_RUN + 1), NO_ENTRIES)
    assert handle.start == Cursor() and handle.backlog_tail is None


@pytest.mark.parametrize(("backlog", "tail"), [("all", None), ("25", 25)])
def test_a_container_older_than_the_first_run_gets_the_backlog(backlog, tail):
    handle = factory(State(FIRST_RUN), backlog).build(info(FIRST_RUN - 1), NO_ENTRIES)
    assert handle.start == Cursor() and handle.backlog_tail == tail


def test_backlog_none_starts_a_container_older_than_the_first_run_when_the_run_began():
    before = time.time_ns()
    made = factory(State(FIRST_RUN))
    after = time.time_ns()
    time.sleep(0.01)  # a handle built late (a busy start-up) starts no later for it
    handle = made.build(info(FIRST_RUN - 1), NO_ENTRIES)
    assert before <= handle.start.floor_ns <= after and not handle.start.streams


def test_the_journal_moves_a_saved_cursor_forward_stream_by_stream():
    cid = "b" * 64
    saved = Cursor(0, {1: (100, 0), 2: (300, 1)})
    state = State(FIRST_RUN, {"docker": {cid: ContainerState(saved, finished_at="then")}})
    journal: Any = FakeJournal({cid: {1: (200, 2), 2: (250, 0)}})  # a crash left stdout ahead
    handle = factory(state).build(info(FIRST_RUN - 1, cid), journal)
    assert handle.start == Cursor(0, {1: (200, 2), 2: (300, 1)})
    assert handle.finished_at == "then"


def test_an_event_after_start_up_uses_the_saved_cursor_without_the_journal():
    cid = "c" * 64
    saved = Cursor(0, {1: (100, 0)})
    state = State(FIRST_RUN, {"docker": {cid: ContainerState(saved)}})
    assert factory(state).build(info(FIRST_RUN - 1, cid), None).start == saved


def test_the_backlog_holds_when_the_journal_cannot_be_read_back():
    # resume_from_journal = false, or the journal could not be opened: no read-back
    before = time.time_ns()
    handle = factory(State(FIRST_RUN)).build(info(FIRST_RUN - 1), None)
    assert handle.start.floor_ns >= before and not handle.start.streams
    tail = factory(State(FIRST_RUN), "25").build(info(FIRST_RUN - 1), None)
    assert tail.backlog_tail == 25


def test_a_container_of_unknown_age_is_read_from_its_first_line():
    handle = factory(State(FIRST_RUN)).build(info(0), None)
    assert handle.start == Cursor() and handle.backlog_tail is None


def test_a_refused_unit_label_is_one_log_line_and_the_container_is_forwarded(caplog):
    data = {"Id": "d" * 64, "Name": "/web", "Config": {"Labels": {"journald-bridge.unit": "x\n"}}}
    handle = factory(State(FIRST_RUN)).build(ContainerInfo.from_inspect(data), NO_ENTRIES)
    lines = [r.getMessage() for r in caplog.records if "journald-bridge.unit" in r.getMessage()]
    assert lines == [
        "container web: label journald-bridge.unit: 'x\\n' is not a systemd unit name;"
        " forwarded without CONTAINER_SYSTEMD_UNIT"
    ]
    assert b"CONTAINER_SYSTEMD_UNIT" not in handle.fields and b"CONTAINER_NAME=web" in handle.fields
