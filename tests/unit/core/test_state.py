from __future__ import annotations

import json
import os

import pytest

from bridge.core.cursor import Cursor
from bridge.core.state import ContainerState, State, StateError, StateStore


def test_round_trip_and_atomic_replace(tmp_path):
    store = StateStore(tmp_path / "state")
    assert store.load() is None
    state = State(
        123,
        {
            "docker": {"c1": ContainerState(Cursor(5, {1: (10, 2)}), "2026-01-01T00:00:00Z")},
            "podman": {"c1": ContainerState(Cursor(6, {2: (3, 1)}), "", {"cursor": "s=1"})},
        },
        {"podman": 99},
    )
    assert store.save(state)
    assert not store.save(state)  # unchanged: no write
    assert StateStore(tmp_path / "state").load() == state
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["positions.json"]


def test_a_damaged_file_is_moved_aside(tmp_path, caplog):
    store = StateStore(tmp_path)
    store.path.write_text("{not json")
    assert store.load() == State(first_run_ns=0)
    assert not store.path.exists()
    assert any(p.name.startswith("positions.damaged-") for p in tmp_path.iterdir())
    assert "damaged" in caplog.text


V1 = b'{"version":1,"first_run_ns":7,"containers":{"c1":{"floor_ns":0,"streams":{"1":[10,2]},"finished_at":""}}}'


@pytest.mark.parametrize(
    "content",
    [
        b'{"version":1,"first_run_ns":1,"containers":{"\xff":{}}}',  # invalid UTF-8
        b'{"version":1,"first_run_ns":1e999,"containers":{}}',  # infinity
        b'{"version":1,"first_run_ns":1,"containers":{"c":{"streams":{"1":[-1e999,1]}}}}',
        V1[: len(V1) // 2],  # truncated
        b'{"version":1,"first_run_ns":1,"containers":{"c":{"streams":{"7":[1,1]}}}}',
        b'{"version":1,"first_run_ns":1,"containers":[]}',
        b"[" * 100_000,  # deeper than the JSON decoder recurses
        b"",
    ],
)
def test_a_damaged_file_never_crashes_and_never_claims_a_first_run(tmp_path, content, caplog):
    store = StateStore(tmp_path)
    store.path.write_bytes(content)
    state = store.load()
    # first run unknown: no container counts as older than the bridge, none loses its lines
    assert state == State(first_run_ns=0)
    assert not store.path.exists()
    assert len(caplog.records) == 1 and "is damaged" in caplog.text


def test_a_file_owned_by_another_user_is_not_trusted(tmp_path, caplog):
    store = StateStore(tmp_path)
    store.path.write_bytes(V1)
    os.chown(store.path, 65534, 65534)
    assert store.load() == State(first_run_ns=0)
    assert "owned by uid 65534" in caplog.text


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_file_is_the_docker_engines_and_written_back_as_version_4(tmp_path, version):
    store = StateStore(tmp_path)
    store.path.write_bytes(V1.replace(b'"version":1', b'"version":%d' % version))
    state = store.load()
    assert state == State(7, {"docker": {"c1": ContainerState(Cursor(0, {1: (10, 2)}), "")}})
    state.points("docker", 0).replace(
        {"c1": ContainerState(Cursor(0, {1: (11, 1), 2: (9, 0)}, frozenset({2})))}
    )
    assert store.save(state)
    assert json.loads(store.path.read_text())["version"] == 4
    assert StateStore(tmp_path).load() == state


def test_a_version_3_file_migrates_to_4_keeping_every_position(tmp_path):
    store = StateStore(tmp_path)
    v3 = {
        "version": 3,
        "first_run_ns": 7,
        "engine_first_run_ns": {"podman": 9},
        "engines": {
            "docker": {"c1": {"floor_ns": 0, "streams": {"1": [10, 2], "2": [8, 0]},
                              "pinned": [2], "finished_at": ""}},
            "podman": {"p1": {"floor_ns": 3, "streams": {"1": [5, 1]}, "finished_at": "x"}},
        },
    }  # fmt: skip
    store.path.write_text(json.dumps(v3))
    state = store.load()
    assert state.containers("docker")["c1"].cursor == Cursor(
        0, {1: (10, 2), 2: (8, 0)}, frozenset({2})
    )
    state.points("docker", 0).replace(
        {"c1": ContainerState(Cursor(0, {1: (10, 2, 1, 4, 1), 2: (8, 0)}, frozenset({2})))}
    )
    assert store.save(state)
    saved = json.loads(store.path.read_text())
    assert saved["version"] == 4
    assert saved["engines"]["docker"]["c1"]["streams"]["1"] == [10, 2, 1, 4, 1]
    assert saved["engines"]["podman"] == v3["engines"]["podman"]
    assert StateStore(tmp_path).load() == state


def test_each_engine_is_first_read_when_it_first_appears():
    state = State(first_run_ns=7)
    assert state.first_run_of("docker", now_ns=50) == 7  # the bridge's own first run
    assert state.first_run_of("podman", now_ns=50) == 50
    assert state.first_run_of("podman", now_ns=90) == 50  # recorded, not moved
    assert State.from_json(state.to_json()).first_run_of("podman", now_ns=99) == 50


def test_resume_points_are_one_engines_and_change_only_through_their_verbs():
    state = State(first_run_ns=7)
    state.containers("podman")["p1"] = ContainerState(Cursor(0, {1: (1, 0)}))
    points = state.points("docker", now_ns=50)
    assert points.first_run_ns == 7
    points.replace({c: ContainerState(Cursor(0, {1: (i, 0)})) for i, c in enumerate("abc")})
    assert points.saved("b") == ContainerState(Cursor(0, {1: (1, 0)}))
    assert points.prune({"a", "c", "x"}) == ["b"]
    points.forget("c")
    points.forget("never-saved")
    assert set(state.containers("docker")) == {"a"}
    assert set(state.containers("podman")) == {"p1"}  # another engine's stand
    assert state.points("podman", now_ns=99).first_run_ns == 99


def test_a_newer_version_is_refused_not_overwritten(tmp_path):
    store = StateStore(tmp_path)
    store.path.write_text('{"version":5,"first_run_ns":1,"engines":{}}')
    with pytest.raises(StateError, match="refusing to downgrade"):
        store.load()
    assert store.path.exists()
