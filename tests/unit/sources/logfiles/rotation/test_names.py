"""Names (names.py), as a NumberedFiles meets them: what a listing leaves out, logged once."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from ..rotating import Reader, names
from .test_numbered import log, open_set  # noqa: F401 (`log`: a fixture)


def _device(path: str) -> None:
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip("no CAP_MKNOD")


_NOT_FILES = {
    "FIFO": os.mkfifo,  # opened blocking, its open would hang the reader for good
    "symlink": lambda p: os.symlink("/etc/passwd", p),  # a host file, read as the log
    "directory": os.mkdir,
    "device": _device,
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("first", "second"), [("FIFO", "symlink"), ("directory", "device")])
def test_names_that_lead_to_no_file_are_neither_opened_nor_followed(
    log,  # noqa: F811
    caplog,
    first,
    second,
):
    log.lines(3)
    log.rotate()
    log.lines(3)
    log.rotate()
    log.lines(3)
    log.rotate()  # P.3 and P.2 and P.1 regular, then the container swaps the newer two
    log.lines(3)
    os.remove(log.path + ".1")
    os.remove(log.path + ".2")
    _NOT_FILES[first](log.path + ".1")
    _NOT_FILES[second](log.path + ".2")
    caplog.set_level(logging.WARNING, "bridge.sources.logfiles.rotation.names")
    with open_set(log) as fs:
        r = Reader(fs)
        fs.start_at(0)
        fs.start_at(0)  # listed again: still one line per kind
        r.drain()
        assert [x.message for x in r.lines] == names(3) + names(3, 9)  # P.3's, then P's
        assert all(b"root:" not in x.message for x in r.lines)
        log.lines(2)
        assert r.drain() == names(2, 12)
    refused = [m.getMessage() for m in caplog.records]
    assert len(refused) == 2
    for kind, name in ((first, ".1"), (second, ".2")):
        assert sum(f"json.log{name} is a {kind}," in m for m in refused) == 1
