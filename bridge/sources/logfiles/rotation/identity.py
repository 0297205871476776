"""File identity, and one open log file: how a file of a log is known, listed and found again.

A file is known by its `FileId` (st_dev, st_ino, and whether its bytes are decompressed): a
position names its file by it, and while a descriptor to the file is held the kernel gives that
inode to no other file. Once no descriptor is held, an inode is soon another file's (dockerd's
rotations recycle a handful), so a file met again by name is a `Fingerprint`: its FileId and
its first `FINGERPRINT_BYTES`; a file compressed since (a new inode) is known by those bytes
alone. `Listed` is a file as one directory scan saw it.

`Opened` is one open file, plain or gzip-compressed. A plain file is read with pread at an
offset of our own (so a descriptor handed over by whoever opened it first can be read from any
position); a .gz is decompressed as a stream, so memory stays bounded whatever its size. Every
descriptor is closed by `close()`, which is idempotent. A file is opened by name only through
safe_open's `open_file`: a name in a directory containers write to may be a symlink (never
followed), a FIFO (whose open would block the reader), a device or a directory (never opened).
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass

from bridge.sources.logfiles.safe_open import open_file

FINGERPRINT_BYTES = 4096  # the first bytes that identify a file compressed since (new inode)
_GZ_HEAD_BYTES = 64 * 1024  # compressed bytes read to inflate a head (logs deflate ~10:1)


@dataclass(frozen=True, slots=True)
class FileId:
    """Which file bytes came from: the part of a position that names the file."""

    dev: int
    ino: int
    compressed: bool = False

    @classmethod
    def of(cls, st: os.stat_result, compressed: bool = False) -> FileId:
        return cls(st.st_dev, st.st_ino, compressed)


@dataclass(frozen=True, slots=True)
class Listed:
    """A file of the log as one directory scan saw it: `P` (n=0) or `P.n`, maybe `.gz`."""

    n: int  # 0 for the current file, k for P.k
    id: FileId  # compressed: the name ends in .gz

    @property
    def gz(self) -> bool:
        return self.id.compressed


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """How to recognise a file later: its FileId, and its first bytes once it may have been
    compressed (None: it is held, or it is the current file, and its FileId is enough)."""

    id: FileId
    head: bytes | None


class Opened:
    __slots__ = ("_gz", "_raw", "damaged", "fd", "final", "gz", "id", "name", "offset")

    def __init__(self, fd: int, name: str, *, final: bool, gz: bool) -> None:
        st = os.fstat(fd)
        self.fd = fd
        self.name = name
        self.id = FileId.of(st, gz)
        self.final = final  # no longer at the path: its end is its end for good
        self.gz = gz
        self.offset = 0  # of the next byte read (decompressed, for a .gz)
        self.damaged = ""  # why a .gz stopped before its end
        self._raw: io.FileIO | None = None
        self._gz: gzip.GzipFile | None = None
        if gz:
            self._raw = io.FileIO(fd, "rb", closefd=False)
            self._gz = gzip.GzipFile(fileobj=self._raw, mode="rb")

    @classmethod
    def open(cls, path: str, n: int, gz: bool) -> Opened:
        """Raises OSError: FileNotFoundError, ELOOP (a symlink), NotRegularFile, ..."""
        fd, _ = open_file(path)
        try:
            return cls(fd, path, final=n > 0, gz=gz)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def adopt(cls, fd: int, path: str) -> Opened:
        return cls(fd, path, final=False, gz=False)

    def read(self, n: int) -> bytes:
        if self._gz is None:
            data = os.pread(self.fd, n, self.offset)
        elif self.damaged:
            return b""
        else:
            try:
                data = self._gz.read(n)
            except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
                self.damaged = str(e)[:80] or type(e).__name__
                return b""
        self.offset += len(data)
        return data

    def pread(self, at: int, n: int) -> bytes:
        """Bytes of a plain file at an offset (nothing for a .gz, which cannot seek cheaply)."""
        return b"" if self.gz or n <= 0 else os.pread(self.fd, n, at)

    def head(self, n: int) -> bytes:
        """The first n bytes of the contents (decompressed for a .gz)."""
        if self.gz:
            return _inflate(os.pread(self.fd, _GZ_HEAD_BYTES, 0), n)
        return os.pread(self.fd, n, 0)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncated(self) -> bool:
        return not self.gz and self.size() < self.offset

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
            self._gz = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @staticmethod
    def gz_head(path: str, n: int) -> bytes:
        """The first n decompressed bytes of a .gz by name (b"" if it cannot be read)."""
        try:
            fd, _ = open_file(path)
        except OSError:
            return b""
        try:
            return _inflate(os.pread(fd, _GZ_HEAD_BYTES, 0), n)
        finally:
            os.close(fd)


def _inflate(compressed: bytes, n: int) -> bytes:
    try:
        return zlib.decompressobj(wbits=31).decompress(compressed, n)
    except zlib.error:
        return b""
