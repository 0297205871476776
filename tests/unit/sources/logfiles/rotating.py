"""Log writers that rotate the way dockerd and conmon do, on real files, and a reader loop."""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass, field

from bridge.core.record import STDOUT
from bridge.sources.logfiles.formats.lines import FileLine
from bridge.sources.logfiles.rotation.numbered import NumberedFiles

from .encode import NS, T0, Rec, json_line, k8s_line


class Writer:
    """dockerd's loggerutils.LogFile: `P`, `P.1` (newest) .. `P.<max_files - 1>`."""

    def __init__(self, path: str, max_files: int = 5) -> None:
        self.path = path
        self.max_files = max_files
        self.n = 0  # lines written so far
        with open(path, "wb"):
            pass

    def lines(self, count: int, size: int = 0) -> bytes:
        data = b"".join(
            json_line(
                Rec(STDOUT, T0 + (self.n + i) * NS // 1000, b"line-%d" % (self.n + i) + b"x" * size)
            )
            for i in range(count)
        )
        self.n += count
        with open(self.path, "ab") as f:
            f.write(data)
        return data

    def _name(self, k: int) -> str:
        for name in (f"{self.path}.{k}", f"{self.path}.{k}.gz"):
            if os.path.exists(name):
                return name
        return ""

    def rotate(self, compress: bool = False) -> None:
        """rotate() and checkCapacityAndRotate() of daemon/logger/loggerutils/logfile.go, 20.10."""
        if self.max_files >= 2:
            oldest = self._name(self.max_files - 1)
            if oldest:
                os.remove(oldest)
            for k in range(self.max_files - 1, 1, -1):
                src = self._name(k - 1)
                if src:
                    os.rename(src, f"{self.path}.{k}" + (".gz" if src.endswith(".gz") else ""))
        os.rename(self.path, self.path + ".1")  # with max-file=1 too, over the last one
        with open(self.path, "wb"):
            pass
        if compress:
            self.compress(1)

    def compress(self, k: int) -> None:
        """compressFile(): P.k.gz written next to P.k, then P.k removed."""
        src = f"{self.path}.{k}"
        with open(src, "rb") as f, gzip.open(src + ".gz", "wb") as out:
            shutil.copyfileobj(f, out)
        os.remove(src)

    def replace(self) -> None:
        """conmon without --log-rotate: a new file renamed over the current one."""
        with open(self.path + ".tmp", "wb"):
            pass
        os.rename(self.path + ".tmp", self.path)

    def truncate(self) -> None:
        """dockerd 19.03 with max-file=1: the same file, truncated in place."""
        with open(self.path, "r+b") as f:
            f.truncate(0)


class Conmon:
    """conmon's k8s-file (src/ctr_logging.c): `ctr.log`; at each rotation a new, empty
    `ctr.log.tmp` renamed over it, which unlinks the old file. Lines of one read(2) share
    a timestamp (`per_read` of them); the zone offset is local time's."""

    def __init__(self, path: str, per_read: int = 1, offset_minutes: int = 0) -> None:
        self.path = path
        self.per_read = per_read
        self.offset = offset_minutes
        self.n = 0
        with open(path, "wb"):
            pass

    def ts(self, i: int) -> int:
        return T0 + (i // self.per_read) * NS // 1000

    def lines(self, count: int) -> None:
        data = b"".join(
            k8s_line(Rec(STDOUT, self.ts(i), b"line-%d" % i), self.offset)
            for i in range(self.n, self.n + count)
        )
        self.n += count
        with open(self.path, "ab") as f:
            f.write(data)

    def rotate(self) -> None:
        with open(self.path + ".tmp", "wb"):
            pass
        os.rename(self.path + ".tmp", self.path)

    def opened(self) -> int:
        """What the watcher does the moment a file appears."""
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)


@dataclass
class Reader:
    """What the integrator's reader thread does: read, reset the parser at restarts, parse."""

    files: NumberedFiles
    lines: list[FileLine] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)
    dropped: int = 0

    def __post_init__(self) -> None:
        self.parser = self.files.format.parser(self.files.position[1])

    def drain(self, max_bytes: int = 1000) -> list[bytes]:
        """Reads until the set says "at the end for now"; returns the messages read."""
        out = []
        while True:
            chunk = self.files.read(max_bytes)
            if chunk.restart:
                self.restarts.append(chunk.restart)
                self.dropped += self.parser.reset(chunk.offset)
            assert self.parser.offset == chunk.offset
            new = self.parser.feed(chunk.data)
            self.lines += new
            out += [x.message for x in new]
            if not chunk.data:
                return out


def names(n: int, start: int = 0) -> list[bytes]:
    return [b"line-%d" % i for i in range(start, start + n)]
