"""Pure, incremental decoders for the bytes of GET /containers/{id}/logs.

Three layers, each fed arbitrary chunks and returning whatever became complete:
- `ChunkedDecoder`: HTTP/1.1 chunked transfer-encoding -> body bytes. The bridge reads the socket
  in large blocks itself, because a Python-level read per HTTP chunk (one per log line) is the
  throughput ceiling of urllib3's own decoder.
- `FrameParser`: Docker's multiplexed stream (non-TTY containers) -> (stream, payload).
- `RawStreamParser`: the TTY raw stream (no frames) -> (STDOUT, payload), split the way dockerd
  split it when it stored the lines (at each newline, or every 16 KiB).

Podman answers `200 OK` and then, when the container is removed before its log stream starts,
writes its JSON error (`{"cause":...,"message":...,"response":500}`) as the body. The parsers
read it as `EngineErrorBody`, the error it is: where a frame header belongs (a header's first
byte is a stream number, never `{`), or for a TTY stream at its very start (every record starts
with the engine's timestamp). Later in a TTY stream a `{` may be the container's own bytes, so it
is never taken for an error there.
"""

from __future__ import annotations

import json
import struct

from bridge.core.record import STDOUT

STDIN, SYSTEM_ERROR = 0, 3
DOCKER_PIECE_BYTES = 16 * 1024  # dockerd's log copier cuts longer lines into pieces of this size
_HEADER = 8
_TIMESTAMP_BYTES = 30  # 2026-11-28T00:13:57.123456789Z
_MAX_TIMESTAMP_BYTES = 35  # 2026-11-28T01:13:57.123456789+01:00
_JSON_OPEN = ord("{")
_MAX_ERROR_BODY_BYTES = 64 * 1024  # Podman's are a few hundred bytes
_MAX_EXPLANATION_CHARS = 300  # of the engine's message, in the bridge's one log line


class StreamFormatError(ValueError):
    """The bytes cannot be what dockerd sends: the stream is unusable from here on."""


class EngineErrorBody(Exception):
    """The engine wrote an error as the body of a `200 OK` log stream.

    `status_code` and `explanation` mean what they mean on docker-py's APIError (the status the
    engine gave in the body, None without one; its message), so both are classified alike.
    """

    def __init__(self, status_code: int | None, explanation: str) -> None:
        super().__init__(f"the engine answered {status_code or 'an error'}: {explanation}")
        self.status_code = status_code
        self.explanation = explanation


class _ErrorBody:
    """Collects a JSON error body, from its `{` on, until the object is whole."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = bytearray(data)

    def add(self, data: bytes) -> None:
        """Adds what came; raises the error once the object is whole."""
        self._data += data
        if len(self._data) > _MAX_ERROR_BODY_BYTES:
            raise StreamFormatError(
                f"neither frames nor a JSON error: {bytes(self._data[:16]).hex()}..."
            )
        # A prefix never parses (an object is whole only at its closing brace), and while it
        # arrives the test below spares the parse.
        if self._data.rstrip().endswith(b"}") and _parsed(self._text()) is not None:
            raise self.error()

    def error(self) -> EngineErrorBody:
        """The error, whole or not (the stream ended)."""
        text = self._text()
        body = _parsed(text)
        if not isinstance(body, dict):
            return EngineErrorBody(None, _one_line(text))
        status, message = body.get("response"), body.get("message") or body.get("cause")
        return EngineErrorBody(
            status if type(status) is int else None,  # not a bool, not a float
            _one_line(message if isinstance(message, str) else text),
        )

    def _text(self) -> str:
        return self._data.decode("utf-8", errors="replace").strip()


def _parsed(text: str) -> object:
    """The JSON value, or None when `text` is not (yet) JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
        return None


def _one_line(text: str) -> str:
    """The engine's words for a log line: printable, on one line, bounded."""
    cut = len(text) > _MAX_EXPLANATION_CHARS
    text = "".join(c if c.isprintable() else " " for c in text[:_MAX_EXPLANATION_CHARS])
    return " ".join(text.split()) + ("..." if cut else "")


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
    """Splits Docker's multiplexed stream into (stream, payload) frames.

    feed() raises `EngineErrorBody` once the engine's JSON error is whole and no frame came
    before it in the same call (those are returned first); flush(), at the end of the stream,
    raises it whatever came.
    """

    __slots__ = ("_error", "_pending")

    def __init__(self) -> None:
        self._pending = b""  # an incomplete frame from the last read
        self._error: _ErrorBody | None = None

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._error is not None:
            self._error.add(data)
            return []
        if self._pending:
            data = self._pending + data
        frames: list[tuple[int, bytes]] = []
        unpack = _FRAME_HEADER.unpack_from
        pos, n = 0, len(data)
        while n - pos >= _HEADER:
            head, size = unpack(data, pos)
            if head & 0xFFFFFF or head >> 24 > SYSTEM_ERROR:
                if data[pos] != _JSON_OPEN:
                    raise StreamFormatError(
                        f"bad frame header {data[pos : pos + _HEADER].hex()} at offset {pos}"
                    )
                self._error = _ErrorBody(data[pos:])
                self._pending = b""
                if not frames:  # else they go first; the next call or flush() raises
                    self._error.add(b"")
                return frames
            end = pos + _HEADER + size
            if end > n:
                break
            frames.append((head >> 24, data[pos + _HEADER : end]))
            pos = end
        self._pending = data[pos:] if pos < n else b""
        return frames

    def flush(self) -> list[tuple[int, bytes]]:
        """The end of the stream: raises the engine's error body; yields no frame (a frame
        cut short by the end is dropped)."""
        if self._error is None and self._pending[:1] == b"{":
            self._error = _ErrorBody(self._pending)  # shorter than a frame header
        self._pending = b""
        if self._error is not None:
            raise self._error.error()
        return []


class RawStreamParser:
    """Splits a TTY container's raw stream of `TIMESTAMP SP message` records.

    Without frames, the end of a record is its newline, or -- for a piece of a long line -- the
    16 KiB mark at which dockerd cut it. An engine's JSON error is read at the stream's start
    only, and raised as FrameParser raises it.
    """

    __slots__ = ("_buf", "_error", "_fresh")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._fresh = True  # nothing received yet
        self._error: _ErrorBody | None = None

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._fresh and data:
            self._fresh = False
            if data[0] == _JSON_OPEN:
                self._error = _ErrorBody(b"")
        if self._error is not None:
            self._error.add(data)
            return []
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
        if self._error is not None:
            raise self._error.error()
        rest = bytes(self._buf)
        self._buf.clear()
        return [(STDOUT, rest)] if rest else []
