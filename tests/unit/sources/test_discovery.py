from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import docker.errors
import pytest
import requests
from prometheus_client import CollectorRegistry

from bridge.config import Config
from bridge.core.queue import PendingQueue
from bridge.core.state import State
from bridge.sources.context import EngineContext
from bridge.sources.discovery import Supervisor
from bridge.sources.engine_api import ContainerStatus
from bridge.sources.filters import ContainerFilter
from bridge.sources.handles import HandleFactory
from bridge.sources.select import Unreadable
from bridge.telemetry import Telemetry

OLD = time.time() - 60  # created long enough ago for its events to have arrived


class FakeAPI:
    """The container list and inspect answers of a dockerd whose events the bridge missed."""

    def __init__(self, containers: list[dict[str, Any]]) -> None:
        self.listed = containers

    def containers(self, all: bool = False) -> list[dict[str, Any]]:  # docker-py's signature
        return self.listed

    def inspect_container(self, cid: str) -> dict[str, Any]:
        entry = next(c for c in self.listed if c["Id"] == cid)
        return {
            "Id": cid,
            "Name": "/" + entry["Name"],
            "Config": {"Image": "busybox", "Labels": entry.get("Labels", {})},
            "Image": "sha256:" + "0" * 64,
            "Created": "2026-11-28T00:00:00Z",
            "State": {"Running": entry["State"] == "running", "FinishedAt": ""},
            "HostConfig": {"LogConfig": {"Type": "json-file"}},
        }


def container(
    n: int, state: str = "running", created: float = OLD, **labels: str
) -> dict[str, Any]:
    return {
        "Id": f"{n:064x}",
        "Name": f"c{n}",
        "State": state,
        "Created": created,
        "Labels": labels,
    }


class FakeReader:
    """A reader that reads nothing: what discovery sees of one."""

    fail_starts = 0  # the next N starts raise, as Thread.start does at the tasks limit
    on_start: ClassVar[Callable[[], object] | None] = None  # runs in start (a slow start)
    made: ClassVar[list[FakeReader]] = []

    def __init__(self, handle: Any, status: ContainerStatus | None) -> None:
        self.name = handle.info.name
        self.started = self.finished = self.stopped = False
        self.starts = 0
        FakeReader.made.append(self)

    @property
    def attached(self) -> bool:
        return self.started and not self.finished

    def start(self) -> None:
        if FakeReader.fail_starts:
            FakeReader.fail_starts -= 1
            raise RuntimeError("can't start new thread")
        self.starts += 1
        if FakeReader.on_start is not None:
            FakeReader.on_start()
        self.started = True

    def wake(self) -> bool:
        return not self.finished

    def container_stopped(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True

    def join(self, timeout: float) -> None:
        pass


@pytest.fixture
def supervisor():
    def make(
        api: FakeAPI, config: Config | None = None, new_reader: Any = FakeReader
    ) -> tuple[Supervisor, CollectorRegistry]:
        config = config or Config()
        registry = CollectorRegistry()
        ctx = EngineContext(
            name="docker",
            host="",
            kind="docker",
            engine=config.all_engines[0],
            api=api,  # type: ignore[arg-type]
            queue=PendingQueue(1 << 20),
            telemetry=Telemetry(registry),
            points=State(first_run_ns=0).points("docker", 0),
            config=lambda: config,
        )
        sup = Supervisor(ctx, ContainerFilter(config.filter), new_reader)
        return sup, registry

    yield make
    FakeReader.fail_starts = 0
    FakeReader.on_start = None
    FakeReader.made = []


def readers(sup: Supervisor) -> dict[str, Any]:
    return {cid: r for cid in ids(40) if (r := sup.containers.reader_of(cid)) is not None}


def ids(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(n)]


def resynced(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("journald_bridge_container_resync_total") or 0.0


def test_the_listing_attaches_a_container_whose_events_were_missed(supervisor, caplog):
    api = FakeAPI([container(1), container(2, state="exited")])
    sup, registry = supervisor(api)
    sup.resync()
    assert set(readers(sup)) == {f"{1:064x}", f"{2:064x}"}
    assert resynced(registry) == 0  # not yet known missed: the events may be late
    sup.resync()  # no start event came meanwhile: missed; and nothing more to attach
    assert resynced(registry) == 2
    assert "a docker event was missed" in caplog.text
    sup.resync()
    assert resynced(registry) == 2


def test_only_readers_that_read_count_as_attached(supervisor):
    """A container `source = files` cannot read gets a placeholder that reads nothing: the
    status and the start-up log must not count it, and the listing must not retry it."""
    unreadable = f"{1:064x}"

    def new_reader(handle: Any, status: ContainerStatus | None) -> Any:
        return (
            Unreadable(handle.info.name) if handle.id == unreadable else FakeReader(handle, status)
        )

    sup, registry = supervisor(FakeAPI([container(1), container(2)]), new_reader=new_reader)
    sup.attach_all(None)
    assert sup.attached == 1
    placeholder = readers(sup)[unreadable]
    sup.resync()
    assert readers(sup)[unreadable] is placeholder and resynced(registry) == 0
    readers(sup)[f"{2:064x}"].finished = True
    assert sup.attached == 0


def test_a_start_event_that_comes_after_the_listing_attached_is_late_not_missed(supervisor, caplog):
    api = FakeAPI([container(1)])
    sup, registry = supervisor(api)
    cid = f"{1:064x}"
    sup.containers.prepare(cid)  # its create event was handled; its start event is late
    sup.resync()
    reader = readers(sup)[cid]
    assert reader.started
    sup._on_event({"Action": "start", "Actor": {"ID": cid, "Attributes": {}}})
    sup.stop(1)  # its start task has woken the same reader
    sup.resync()
    assert readers(sup)[cid] is reader and reader.starts == 1
    assert resynced(registry) == 0 and "missed" not in caplog.text


def test_an_event_and_the_listings_never_start_two_readers_for_one_container(supervisor, caplog):
    """The race of a late start event with the periodic and the start-up listings: each caller
    reaches the container's reader while another is starting it (a start that takes long)."""
    api = FakeAPI([container(1)])
    sup, registry = supervisor(api)
    cid = f"{1:064x}"
    entered, release = threading.Event(), threading.Event()
    FakeReader.on_start = lambda: (entered.set(), release.wait(5))
    listing = threading.Thread(target=sup.attach_all, args=(None,))
    listing.start()  # start-up listing: registers the reader, then starts it (and blocks)
    assert entered.wait(5)
    FakeReader.on_start = None
    sup.containers.consider(cid, started=True)  # the start event's task, meanwhile
    sup.resync()  # the periodic listing, meanwhile
    release.set()
    listing.join(5)
    sup.resync()
    made = [r for r in FakeReader.made if r.name == "c1"]
    assert len(made) == 1 and made[0].starts == 1
    assert resynced(registry) == 0 and "missed" not in caplog.text


def test_a_container_just_created_is_left_to_its_events(supervisor):
    sup, registry = supervisor(FakeAPI([container(1, created=time.time())]))
    sup.resync()
    assert readers(sup) == {} and resynced(registry) == 0


def test_a_filtered_out_container_is_inspected_once(supervisor):
    config = Config.model_validate({"filter": {"include_labels": ["team=web"]}})
    api = FakeAPI([container(1, team="db"), container(2, team="web")])
    inspected: list[str] = []
    inspect = api.inspect_container
    api.inspect_container = lambda cid: inspected.append(cid) or inspect(cid)  # type: ignore[method-assign]
    sup, registry = supervisor(api, config)
    sup.resync()
    sup.resync()
    assert set(readers(sup)) == {f"{2:064x}"}
    assert inspected.count(f"{1:064x}") == 1
    assert resynced(registry) == 1


def test_a_running_container_whose_reader_ended_is_read_again(supervisor):
    api = FakeAPI([container(1), container(2, state="exited")])
    sup, registry = supervisor(api)
    sup.resync()
    first = readers(sup)
    for reader in first.values():
        reader.finished = True  # stream ended (container stopped); its start event was missed
    sup.resync()
    assert readers(sup)[f"{1:064x}"] is not first[f"{1:064x}"]
    assert readers(sup)[f"{2:064x}"] is first[f"{2:064x}"]  # still stopped: nothing to read
    sup.resync()
    assert resynced(registry) == 3


def test_no_attach_is_counted_when_nothing_was_attached(supervisor):
    api = FakeAPI([container(1)])
    sup, registry = supervisor(api)
    sup.resync()
    readers(sup)[f"{1:064x}"].finished = True

    def gone(cid: str) -> dict[str, Any]:
        raise docker.errors.NotFound("removed meanwhile")

    api.inspect_container = gone  # type: ignore[method-assign]
    sup.resync()
    sup.resync()
    assert resynced(registry) == 1


def test_a_reader_whose_thread_could_not_start_is_started_by_the_next_listing(supervisor, caplog):
    api = FakeAPI([container(1)])
    sup, registry = supervisor(api)
    FakeReader.fail_starts = 1
    sup.attach_all(None)  # start-up: the tasks limit was hit once
    assert "cannot start its reader" in caplog.text
    sup.resync()
    assert readers(sup)[f"{1:064x}"].started
    sup.resync()
    assert resynced(registry) == 1


def test_a_start_up_attempt_cut_short_is_completed_by_the_retry(supervisor):
    api = FakeAPI([container(1), container(2)])
    sup, _ = supervisor(api)
    inspect = api.inspect_container
    calls = []

    def flaky(cid: str) -> dict[str, Any]:
        calls.append(cid)
        if len(calls) == 2:
            raise requests.exceptions.ConnectionError("dockerd busy")
        return inspect(cid)

    api.inspect_container = flaky  # type: ignore[method-assign]
    with pytest.raises(requests.exceptions.ConnectionError):
        sup.attach_all(None)  # the daemon's start-up retries this
    sup.attach_all(None)
    assert all(r.started for r in readers(sup).values()) and len(readers(sup)) == 2


def test_a_container_excluded_then_included_by_reloads_goes_on_where_it_was(supervisor):
    api = FakeAPI([container(1, team="web")])
    sup, _ = supervisor(api)
    sup.resync()
    cid = f"{1:064x}"
    handle = sup.containers.handle_of(cid)
    handle.commit(1, (1_000, 3))
    exclude = Config.model_validate({"filter": {"exclude_labels": ["team=web"]}})
    sup.reconfigure(exclude, ContainerFilter(exclude.filter))
    assert cid not in readers(sup)
    assert sup.snapshot()[cid].cursor.streams == {1: (1_000, 3)}  # still saved
    sup.reconfigure(Config(), ContainerFilter(Config().filter))
    assert sup.containers.handle_of(cid).start.streams == {1: (1_000, 3)}  # not from its first line


def test_a_label_that_breaks_one_container_does_not_stop_the_others(supervisor, monkeypatch):
    api = FakeAPI([container(1), container(2)])
    sup, _ = supervisor(api)
    build = HandleFactory.build

    def fragile(self, info, journal):
        if info.name == "c1":
            raise OverflowError("cannot convert float infinity to integer")
        return build(self, info, journal)

    monkeypatch.setattr(HandleFactory, "build", fragile)
    sup.attach_all(None)
    assert set(readers(sup)) == {f"{2:064x}"}


def test_events_for_one_container_run_in_order_off_the_events_thread(supervisor):
    api = FakeAPI([container(1)])
    sup, _ = supervisor(api)
    cid = f"{1:064x}"
    for action in ("create", "start", "die", "destroy"):
        sup.submit(cid, action)
    deadline = time.monotonic() + 5
    while sup.containers.handle_of(cid) is not None or readers(sup):
        assert time.monotonic() < deadline, "destroy did not follow start"
        time.sleep(0.01)
    sup.stop(1)


def test_a_container_gone_before_its_start_task_is_read_by_its_events_metadata_then_forgotten(
    supervisor, monkeypatch
):
    api = FakeAPI([])
    gone = requests.Response()
    gone.status_code = 404

    def inspect(cid: str) -> dict[str, Any]:
        raise docker.errors.NotFound("no such container", response=gone)

    monkeypatch.setattr(api, "inspect_container", inspect)
    made: list[str] = []
    sup, _ = supervisor(api)
    monkeypatch.setattr(
        sup.containers, "_new_reader", lambda h, s: made.append(h.info.name) or FakeReader(h, s)
    )
    cid = f"{7:064x}"
    attrs = {"name": "job", "image": "busybox", "org.unused": "x" * 4000}
    for action in ("create", "start", "die", "destroy"):
        sup._on_event({"Action": action, "Actor": {"ID": cid, "Attributes": attrs}})
    deadline = time.monotonic() + 5
    while sup._event_metadata.held_bytes or sup.containers.handle_of(cid) is not None:
        assert time.monotonic() < deadline, "the events' metadata outlived its container"
        time.sleep(0.01)
    assert made == ["job"]
    sup.stop(1)


def test_a_start_up_attach_that_fails_leaves_the_engine_not_connected(supervisor):
    """dockerd gone between the events subscription and the listing: until the retry
    subscribes again, the engine is down (/readyz), not "up" with nothing attached."""

    class Events:
        closed = False

        def close(self) -> None:
            Events.closed = True

    class Dying(FakeAPI):
        def events(self, **_: Any) -> Events:
            return Events()

        def containers(self, all: bool = False) -> list[dict[str, Any]]:
            raise requests.exceptions.ConnectionError("dockerd stopped")

    sup, registry = supervisor(Dying([]))
    with pytest.raises(requests.exceptions.ConnectionError):
        sup.start(None)
    assert not sup.connected and Events.closed
    assert registry.get_sample_value("journald_bridge_engine_up", {"engine": "docker"}) == 0
