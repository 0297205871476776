"""The inner stream a container's readers and the writer share."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.inner import InnerStream


@dataclass(frozen=True)
class Pos:
    cursor: str

    def to_json(self) -> dict[str, object]:
        return {"cursor": self.cursor}


def test_a_stream_persists_where_it_started_until_something_is_committed():
    assert InnerStream().committed_json() is None
    stream = InnerStream(Pos("a"))
    assert stream.committed_json() == {"cursor": "a"}
    assert stream.resume_from() == Pos("a")
    stream.read = Pos("c")  # queued, not yet in the journal
    assert stream.committed_json() == {"cursor": "a"}
    assert stream.resume_from() == Pos("c")  # the next reader goes on after what was queued
    stream.commit(Pos("b"))
    assert stream.committed_json() == {"cursor": "b"}
