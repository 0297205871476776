"""The fixtures of the log-file tests that watch a real directory: an engine's root with its
`containers` directory, and a Recorder of what the watcher hands over."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_watch import Recorder


@pytest.fixture
def rec() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "containers").mkdir()
    return tmp_path
