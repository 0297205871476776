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

import struct

from bridge.core.record import STDOUT

STDIN, SYSTEM_ERROR = 0, 3
DOCKER_PIECE_BYTES = 16 * 1024  # dockerd's log copier cuts longer lines into pieces of this size
_HEADER = 8
_TIMESTAMP_BYTES = 30  # 2026-11-28T00:13:57.123456789Z
_MAX_TIMESTAMP_BYTES = 35  # 2026-11-28T01:13:57.123456789+01:00


class StreamFormatError(ValueError):
    """The bytes cannot be what dockerd sends: the stream is unusable from here on."""


class ChunkedDecoder:
    """Decodes HTTP/1.1 chunked transfer-encoding incrementally.

    dockerd flushes every log line as its own chunk, so this runs once per line: the common
    case (no leftover from the previous read) works on the received bytes without copying them
    into a buffer first.
    """

    __slots__ = ("_done", "_left", "_rest")

    def __init__(self) -> None:
        self._rest = b""  # an incomplete size line or chunk trailer from the last read
        self._left = -1  # bytes of chunk data still to come; -1 while a size line is expected
        self._done = False

    @property
    def done(self) -> bool:
        """True once the terminating zero-size chunk has been read."""
        return self._done

    def feed(self, data: bytes) -> bytes:
        if self._rest:
            data = self._rest + data
            self._rest = b""
        out: list[bytes] = []
        pos, n, left = 0, len(data), self._left
        while pos < n and not self._done:
            if left > 0:
                end = min(pos + left, n)
                out.append(data[pos:end])
                left -= end - pos
                pos = end
            elif left == 0:  # the CRLF that closes a chunk's data
                if n - pos < 2:
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise StreamFormatError("chunked encoding: missing CRLF after chunk data")
                pos += 2
                left = -1
            else:
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if n - pos > 1024:
                        raise StreamFormatError("chunked encoding: chunk-size line too long")
                    break
                left = _chunk_size(data[pos:end])
                pos = end + 2
                if left == 0:
                    self._done = True  # trailers, if any, are of no interest
                elif pos + left + 2 <= n:  # the whole chunk is here: one step, not three
                    end = pos + left
                    if data[end : end + 2] != b"\r\n":
                        raise StreamFormatError("chunked encoding: missing CRLF after chunk data")
                    out.append(data[pos:end])
                    pos, left = end + 2, -1
        self._left = left
        if pos < n and not self._done:
            self._rest = data[pos:]
        return out[0] if len(out) == 1 else b"".join(out)


def _chunk_size(line: bytes) -> int:
    try:
        return int(line, 16)
    except ValueError:
        try:
            return int(line.split(b";", 1)[0].strip(), 16)  # chunk extensions
        except ValueError:
            raise StreamFormatError(f"chunked encoding: bad chunk size {line[:20]!r}") from None


_FRAME_HEADER = struct.Struct(">II")


class FrameParser:
    """Splits Docker's multiplexed stream into (stream, payload) frames."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""  # an incomplete frame from the last read

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._pending:
            data = self._pending + data
        frames: list[tuple[int, bytes]] = []
        unpack = _FRAME_HEADER.unpack_from
        pos, n = 0, len(data)
        while n - pos >= _HEADER:
            head, size = unpack(data, pos)
            if head & 0xFFFFFF or head >> 24 > SYSTEM_ERROR:
                raise StreamFormatError(
                    f"bad frame header {data[pos : pos + _HEADER].hex()} at offset {pos}"
                )
            end = pos + _HEADER + size
            if end > n:
                break
            frames.append((head >> 24, data[pos + _HEADER : end]))
            pos = end
        self._pending = data[pos:] if pos < n else b""
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
        while pos < n:
            # dockerd cuts at 16 KiB of message; the timestamp before it is usually 30 bytes
            # (UTC), but a daemon in another zone writes an offset instead of "Z".
            space = buf.find(b" ", pos, pos + _MAX_TIMESTAMP_BYTES + 1)
            if space < 0 and n - pos <= _MAX_TIMESTAMP_BYTES:
                break  # the timestamp itself is not complete yet
            head = (space if space >= 0 else pos + _TIMESTAMP_BYTES) + 1 - pos
            limit = head + DOCKER_PIECE_BYTES
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
