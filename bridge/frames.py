"""Pure, incremental decoders for the bytes of GET /containers/{id}/logs.

Three layers, each fed arbitrary chunks and returning whatever became complete:
- `ChunkedDecoder`: HTTP/1.1 chunked transfer-encoding -> body bytes. The bridge reads the socket
  in large blocks itself, because a Python-level read per HTTP chunk (one per log line) is the
  throughput ceiling of urllib3's own decoder.
- `FrameParser`: Docker's multiplexed stream (non-TTY containers) -> (stream, payload).
- `RawStreamParser`: the TTY raw stream (no frames) -> (STDOUT, payload), split the way dockerd
  split it when it stored the lines (at each newline, or every 16 KiB).
"""

from __future__ import annotations

STDIN, STDOUT, STDERR, SYSTEM_ERROR = 0, 1, 2, 3
DOCKER_PIECE_BYTES = 16 * 1024  # dockerd's log copier cuts longer lines into pieces of this size
_HEADER = 8
_TIMESTAMP_BYTES = 30  # 2026-11-28T00:13:57.123456789Z


class StreamFormatError(ValueError):
    """The bytes cannot be what dockerd sends: the stream is unusable from here on."""


class ChunkedDecoder:
    """Decodes HTTP/1.1 chunked transfer-encoding incrementally."""

    __slots__ = ("_buf", "_done", "_left")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._left = -1  # bytes of chunk data still to come; -1 while a size line is expected
        self._done = False

    @property
    def done(self) -> bool:
        """True once the terminating zero-size chunk has been read."""
        return self._done

    def feed(self, data: bytes) -> bytes:
        buf = self._buf
        buf += data
        out = bytearray()
        pos = 0
        while not self._done:
            if self._left > 0:
                take = min(self._left, len(buf) - pos)
                if take == 0:
                    break
                out += buf[pos : pos + take]
                pos += take
                self._left -= take
                continue
            if self._left == 0:  # the CRLF that closes a chunk's data
                if len(buf) - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise StreamFormatError("chunked encoding: missing CRLF after chunk data")
                pos += 2
                self._left = -1
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if len(buf) - pos > 1024:
                    raise StreamFormatError("chunked encoding: chunk-size line too long")
                break
            size_field = bytes(buf[pos:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                raise StreamFormatError(
                    f"chunked encoding: bad chunk size {size_field[:20]!r}"
                ) from None
            pos = end + 2
            if size == 0:
                self._done = True  # trailers, if any, are of no interest
                break
            self._left = size
        del buf[:pos]
        return bytes(out)


class FrameParser:
    """Splits Docker's multiplexed stream into (stream, payload) frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        frames: list[tuple[int, bytes]] = []
        pos = 0
        n = len(buf)
        while n - pos >= _HEADER:
            stream = buf[pos]
            if stream > SYSTEM_ERROR or buf[pos + 1] or buf[pos + 2] or buf[pos + 3]:
                raise StreamFormatError(
                    f"bad frame header {bytes(buf[pos : pos + _HEADER]).hex()} at offset {pos}"
                )
            end = pos + _HEADER + int.from_bytes(buf[pos + 4 : pos + 8], "big")
            if end > n:
                break
            frames.append((stream, bytes(buf[pos + _HEADER : end])))
            pos = end
        del buf[:pos]
        return frames


class RawStreamParser:
    """Splits a TTY container's raw stream of `TIMESTAMP SP message` records.

    Without frames, the end of a record is its newline, or -- for a piece of a long line -- the
    16 KiB mark at which dockerd cut it.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        records: list[tuple[int, bytes]] = []
        pos = 0
        n = len(buf)
        limit = _TIMESTAMP_BYTES + 1 + DOCKER_PIECE_BYTES
        while pos < n:
            end = buf.find(b"\n", pos, pos + limit)
            if end >= 0:
                records.append((STDOUT, bytes(buf[pos : end + 1])))
                pos = end + 1
            elif n - pos >= limit:
                records.append((STDOUT, bytes(buf[pos : pos + limit])))
                pos += limit
            else:
                break
        del buf[:pos]
        return records

    def flush(self) -> list[tuple[int, bytes]]:
        """What is left at the end of the stream: a last piece without a newline."""
        rest = bytes(self._buf)
        self._buf.clear()
        return [(STDOUT, rest)] if rest else []
