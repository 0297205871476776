from __future__ import annotations

from bridge.cursor import Cursor
from bridge.state import ContainerState, State, StateStore


def test_round_trip_and_atomic_replace(tmp_path):
    store = StateStore(tmp_path / "state")
    assert store.load() is None
    state = State(123, {"c1": ContainerState(Cursor(5, {1: (10, 2)}), "2026-01-01T00:00:00Z")})
    assert store.save(state)
    assert not store.save(state)  # unchanged: no write
    assert StateStore(tmp_path / "state").load() == state
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["positions.json"]


def test_a_damaged_file_is_moved_aside(tmp_path, caplog):
    store = StateStore(tmp_path)
    store.path.write_text("{not json")
    assert store.load() is None
    assert not store.path.exists()
    assert any(p.name.startswith("positions.damaged-") for p in tmp_path.iterdir())
    assert "damaged" in caplog.text
