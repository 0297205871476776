"""The API source: one reader thread per container, from its log stream to the queue.

A reader opens GET /containers/{id}/logs with `since` at its cursor, decodes the body itself
(chunked encoding, frames, timestamps, cursor filter, partial-line joiner) and puts batches on
the pipeline queue. When the stream ends it asks dockerd why: still running (dockerd restarted,
or the container restarted) means reopen at the cursor; stopped means one more pass without
follow, so that nothing the follow stream missed at the stop is lost; removed means done.

Podman (`podman=True`) is read in windows instead of a follow stream. Its follow stream drops
lines of a fast writer, and its compat API stamps lines in whole seconds (up to 5.4 at least),
so a position `(second, k)` counted on a stream that dropped lines points at the wrong line.
What Podman does keep exact: `since` is compared with each line's own nanosecond time in
conmon's file, and a read without follow is a full read of that file. So while the container
runs, each poll reads from the position's second to the end of the file, without follow, and
numbers that second's lines again from its first: `k` is exact whatever broke before. The last
line of a read is held back, not counted: conmon may have been writing it, and Podman hands a
half-written last line over as a whole one. It comes again, whole, at the next poll; it is
queued once two polls end on it, once the engine says the container stopped (then one read to
the end takes the rest), or when the container is gone. The cost: Podman reads the container's
log file from its start at each poll (its API takes no offset), and a line arrives a poll or two
late. The `die` event cuts a poll short: a `--rm` container's log is gone a tenth of a second
after its exit.

Errors are transient (connection refused, broken stream, 5xx: retry with backoff) or permanent
for this container (404/409: it is gone). An error the engine writes as the body of a `200 OK`
(Podman, for a container being removed) is classified the same way. Either way only this
container is affected.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import requests

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor, CursorFilter
from bridge.core.queue import PendingQueue
from bridge.core.record import STDERR, STDOUT, Record
from bridge.core.timestamps import TimestampParser, format_rfc3339_nano, format_since
from bridge.sources.api.frames import (
    SYSTEM_ERROR,
    ChunkedDecoder,
    EngineErrorBody,
    FrameParser,
    RawStreamParser,
    StreamFormatError,
)
from bridge.sources.engine_api import (
    TRANSIENT_ERRORS,
    ContainerGone,
    ContainerStatus,
    container_status,
    is_gone,
)
from bridge.sources.reader import ReaderThread
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)

_READ_BYTES = 256 * 1024
# After a small read, wait this long before the next one. dockerd sends each line as its own
# HTTP chunk, so a reader that keeps up wakes once per line or two, and the per-wake-up costs
# (system calls, GIL hand-overs, a batch through the queue and a sendmmsg) outweigh the lines.
# Waiting lets the lines of the next millisecond arrive together; it adds at most this much
# latency, and nothing when the stream is busy enough to fill a read.
_LINGER_SECONDS = 0.002
_LINGER_BELOW_BYTES = 64 * 1024
# Podman: the next read after one that queued lines; doubled after each that queued none.
_POLL_BUSY_SECONDS = 0.25
_POLL_IDLE_SECONDS = 2.0


class ApiReader(ReaderThread):
    """Reads one container through the Engine API until its log ends for good."""

    source = "api"

    def __init__(
        self,
        api: docker.APIClient,
        handle: ContainerHandle,
        queue: PendingQueue,
        telemetry: Telemetry,
        max_line_bytes: int,
        max_backoff: float,
        *,
        status: ContainerStatus | None = None,
        podman: bool = False,
    ) -> None:
        super().__init__(handle, queue, telemetry, max_line_bytes)
        self._api = api
        self._podman = podman  # read in windows, never through a follow stream
        self._nudge = threading.Event()  # Podman: look now (the container stopped, or stop)
        self._died = False  # Podman: the engine said it stopped; not read to the end since
        self._last: tuple[int, bytes] | None = None  # Podman: the last frame read, held back
        self._poll = _POLL_BUSY_SECONDS
        # The container's State as just seen (inspect or start event): the first pass uses it
        # instead of asking dockerd again (with --rm there is no time to lose).
        self._status = status  # the engine just said so: not asked again at first
        self._max_backoff = max_backoff
        self._timestamps = TimestampParser()
        self._sock: socket.socket | None = None

    def container_stopped(self) -> None:
        """Podman: the last read (to the end, nothing held back) at once, before asking
        anything, as a `--rm` container's log is gone a tenth of a second after its exit."""
        self._died = True
        self._nudge.set()

    def _pause(self, seconds: float) -> None:
        self._nudge.wait(seconds)
        self._nudge.clear()

    def stop(self) -> None:
        """Stops reading; what was read is already queued."""
        super().stop()
        self._nudge.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        try:
            self._read_until_done()
        except ContainerGone:
            self._release_last()  # its log is gone: the last line read is all there is
            raise

    def _read_until_done(self) -> None:
        handle = self._handle
        if handle.read_cursor is None:
            handle.read_cursor = handle.start
        backoff = 0.1
        failing_since: float | None = None
        while not self._stop.is_set():
            try:
                died, self._died = self._died and self._podman, False
                status, self._status = self._status, None
                if died:  # read to the end first: it may be removed any moment
                    read = self._read(follow=False)
                    status = container_status(self._api, handle.id)
                elif status is None:
                    status = container_status(self._api, handle.id)
                running = status.running
                windowed = self._podman and running
                if died:
                    pass  # if it runs again (restarted), windows go on from here
                elif windowed:
                    read = self._read(follow=False, hold_last=True)
                else:
                    self._read(follow=running)
                if failing_since is not None:  # once a read went through, not before
                    log.info("container %s: reading again", self.name)
                    failing_since, backoff = None, 0.1
            except (docker.errors.APIError, EngineErrorBody) as exc:
                if is_gone(exc):
                    raise ContainerGone from exc
                failing_since = self._transient(exc, failing_since)
            except TRANSIENT_ERRORS as exc:
                if self._stop.is_set():
                    return
                failing_since = self._transient(exc, failing_since)
            else:
                if self._stop.is_set():
                    return  # stopped mid-read: the rest is read at the next start
                if not running and self._finish(status.finished_at):
                    return
                if windowed:
                    self._poll = (
                        _POLL_BUSY_SECONDS if read else min(2 * self._poll, _POLL_IDLE_SECONDS)
                    )
                    self._pause(self._poll)
                continue
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _transient(self, exc: BaseException, failing_since: float | None) -> float:
        if failing_since is None:
            kind = type(exc).__name__
            self._telemetry.stream_error(kind)
            log.warning(
                "container %s: log stream interrupted (%s: %s); retrying", self.name, kind, exc
            )
            return time.monotonic()
        return failing_since

    def _release_last(self) -> None:
        """Queues the frame held back (Podman), counted after what was read before it."""
        last, self._last = self._last, None
        if last is not None:
            handle = self._handle
            cursor = handle.read_cursor or handle.start
            cursor_filter = CursorFilter(cursor)
            self._put(self._records([last], cursor_filter))
            handle.read_cursor = cursor_filter.advanced(cursor)

    def _read(self, *, follow: bool, hold_last: bool = False) -> int:
        """One request from the read cursor; returns how many lines it queued. `hold_last`:
        the last frame is held back (`_last`), and queued only if the last read held it too."""
        held = self._last  # read again now (whole), or released if this read finds it gone
        handle = self._handle
        cursor = handle.read_cursor or handle.start
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow)}
        tail = handle.backlog_tail
        if tail is not None and not cursor.streams:
            params["tail"] = str(tail)
            cursor_filter = CursorFilter(Cursor())  # the tail is exactly what is wanted
            # Should this stream break before a line arrives, reopening reads from here on.
            cursor = handle.start = Cursor(time.time_ns(), {})
            handle.backlog_tail = None
        else:
            params["tail"] = "all"
            since = cursor.since_ns()
            if since > 0 and self._podman:  # Podman's `since` is exclusive
                params["since"] = format_rfc3339_nano(since - 1)
            elif since > 0:
                params["since"] = format_since(since)
            cursor_filter = CursorFilter(cursor)
        self._steps_seen = 0  # a new filter counts from 0
        log.debug("container %s: reading logs %s from %s", self.name, params, cursor)
        try:
            response = self._api._get(
                self._api._url("/containers/{0}/logs", handle.id),
                params=params,
                stream=True,
                timeout=None,
            )
            self._api._raise_for_status(response)
            try:
                queued = self._consume(response, cursor_filter, hold_last)
            finally:
                self._sock = None
                response.close()
        finally:
            handle.read_cursor = cursor_filter.advanced(cursor)
            if cursor_filter.gap_streams:
                self._rotation_gap()
        if self._last is not None and self._last == held:  # two reads ended on it: whole
            self._release_last()
            queued += 1
        return queued

    def _consume(
        self, response: requests.Response, cursor_filter: CursorFilter, hold_last: bool = False
    ) -> int:
        parser: FrameParser | RawStreamParser = (
            RawStreamParser() if self._handle.info.tty else FrameParser()
        )
        queued = 0
        last: tuple[int, bytes] | None = None
        for frames in self._frames(response, parser):
            if hold_last and frames:
                frames = [last, *frames] if last is not None else list(frames)
                last = frames.pop()
            records = self._records(frames, cursor_filter)
            queued += len(records)
            self._put(records)
            if cursor_filter.steps != self._steps_seen:
                self._clock_stepped(cursor_filter)
        self._last = last  # what a read without `hold_last` read to the end: nothing held
        return queued

    def _frames(
        self, response: requests.Response, parser: FrameParser | RawStreamParser
    ) -> Iterator[list[tuple[int, bytes]]]:
        for body in self._body(response):
            yield parser.feed(body)
        yield parser.flush()

    def _records(
        self, frames: list[tuple[int, bytes]], cursor_filter: CursorFilter
    ) -> list[Record]:
        # The hot loop of the API source (once per line): locals and a plain-line shortcut
        # keep it cheap (bench/results.md). logfiles/reader.py's `_records` is its twin on
        # purpose: a shared helper would cost a call per line.
        records: list[Record] = []
        append = records.append
        admit = cursor_filter.admit
        joiner = self._joiner
        idle = joiner.idle
        parse = self._timestamps.parse
        for stream, payload in frames:
            if stream != STDOUT and stream != STDERR:
                if stream == SYSTEM_ERROR:
                    log.warning(
                        "container %s: dockerd: %s",
                        self.name,
                        payload.decode(errors="replace").strip(),
                    )
                continue
            space = payload.find(b" ", 0, 64)
            try:
                if space < 0:
                    raise ValueError("no timestamp")
                timestamp = payload[:space]
                ts_ns = parse(timestamp)
            except ValueError as exc:
                self._malformed(f"no valid timestamp: {exc}")
                continue
            position = admit(stream, ts_ns)
            if position is None:
                continue
            if idle and payload[-1] == 10:  # a whole line, nothing pending: no joiner needed
                append(Record(stream, payload[space + 1 : -1], timestamp, position, position))
            else:
                records.extend(joiner.push(stream, timestamp, position, payload[space + 1 :]))
                idle = joiner.idle
        return records

    def _body(self, response: requests.Response) -> Iterator[bytes]:
        """The response body, read in large blocks straight from the connection."""
        fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
        if fp is None or not hasattr(fp, "read1"):  # not http.client underneath: the slow way
            yield from response.raw.stream(_READ_BYTES, decode_content=False)
            return
        raw = getattr(fp, "raw", None)
        self._sock = getattr(raw, "_sock", None)
        if self._stop.is_set():
            return
        chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
        decoder = ChunkedDecoder() if chunked else None
        remaining = int(response.headers.get("Content-Length", "-1"))
        linger = 0.0
        while remaining != 0:
            if linger:
                time.sleep(linger)
            data = fp.read1(_READ_BYTES)
            linger = _LINGER_SECONDS if len(data) < _LINGER_BELOW_BYTES else 0.0
            if not data:
                if decoder is not None and not decoder.done and not self._stop.is_set():
                    raise StreamFormatError("log stream ended in the middle of a chunk")
                return
            if decoder is not None:
                body = decoder.feed(data)
                if body:
                    yield body
                if decoder.done:
                    return
            else:
                if remaining > 0:
                    data = data[:remaining]
                    remaining -= len(data)
                yield data
