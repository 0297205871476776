"""FileSequence, the reading half shared by NumberedFiles and ReplacedFiles, on real files with
the simplest way of finding the next file: a list of paths given in advance."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.sources.logfiles.formats.k8sfile import K8S_FILE
from bridge.sources.logfiles.rotation.identity import Opened
from bridge.sources.logfiles.rotation.sequence import FileSequence


class Listed(FileSequence):
    """Moves on to the next of `later` (renamed away from the path beforehand by the test)."""

    def __init__(self, path: Path, later: list[Path]) -> None:
        self.gap_reasons: list[str] = []
        super().__init__(
            str(path), K8S_FILE, Opened.open(str(path), 0, False), self.gap_reasons.append
        )
        self._later = later

    def _advance(self) -> bool:
        if not self._later:
            return False
        self._reading.close()
        self._reading = Opened.open(str(self._later.pop(0)), 0, False)
        self._restart = "rotated"
        return True


def test_a_file_at_the_path_is_followed_and_one_gone_from_it_read_to_its_end(tmp_path):
    path = tmp_path / "ctr.log"
    path.write_bytes(b"one\n")
    with Listed(path, [tmp_path / "next.log"]) as files:
        first = files.read()
        assert (first.data, first.offset, first.restart) == (b"one\n", 0, "start")
        assert files.read().data == b""  # at the end for now: still at the path
        assert not files.exhausted
        with path.open("ab") as f:
            f.write(b"two\n")
        os.rename(path, tmp_path / "old.log")  # written, then rotated away
        (tmp_path / "next.log").write_bytes(b"three\n")
        assert files.read().data == b"two\n"  # the end of the old file first
        nxt = files.read()
        assert (nxt.data, nxt.offset, nxt.restart) == (b"three\n", 0, "rotated")
        assert files.read().data == b""
        assert files.exhausted  # final (not at the path) and nothing after it
        assert files.gaps == 0


def test_a_file_truncated_in_place_is_read_again_from_its_start(tmp_path):
    path = tmp_path / "ctr.log"
    path.write_bytes(b"a long first line\n")
    with Listed(path, []) as files:
        files.read()
        path.write_bytes(b"new\n")  # shorter than the offset reached
        chunk = files.read()
        assert (chunk.data, chunk.offset, chunk.restart) == (b"new\n", 0, "truncated")


def test_a_gap_restarts_the_parser_unless_noticed_mid_file(tmp_path):
    path = tmp_path / "ctr.log"
    path.write_bytes(b"x\n")
    with Listed(path, []) as files:
        files.read()
        files._gap("lost in the middle", restart=False)
        assert files.read().restart == ""
        files._gap("lost at a boundary")
        assert files.read().restart == "gap"
        assert files.gaps == 2 and files.gap_reasons == ["lost in the middle", "lost at a boundary"]
