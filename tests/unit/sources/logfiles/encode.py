"""Writers of the three formats, as dockerd and conmon write them, for tests."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hypothesis import strategies as st

from bridge.core.record import STDERR, STDOUT

NS = 1_000_000_000
T0 = 1_796_199_150 * NS  # 2026-12-02T08:12:30Z
NAMES = {STDOUT: "stdout", STDERR: "stderr"}


@dataclass(frozen=True)
class Rec:
    stream: int
    ts_ns: int
    message: bytes  # without the newline
    complete: bool = True


def rfc3339(ts_ns: int, *, trim: bool = False, offset_minutes: int | None = None) -> bytes:
    """UTC "Z" with nine digits (trim: as Go's RFC3339Nano, zeros trimmed), or a zone offset."""
    sec, frac = divmod(ts_ns, NS)
    if offset_minutes is not None:
        local = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec + offset_minutes * 60))
        sign = "-" if offset_minutes < 0 else "+"
        hh, mm = divmod(abs(offset_minutes), 60)
        return f"{local}.{frac:09d}{sign}{hh:02d}:{mm:02d}".encode()
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    fraction = f"{frac:09d}"
    if trim:
        fraction = fraction.rstrip("0")
        return f"{base}{'.' + fraction if fraction else ''}Z".encode()
    return f"{base}.{fraction}Z".encode()


def _go_string(data: bytes) -> bytes:
    """ffjsonWriteJSONBytesAsString (daemon/logger/jsonfilelog/jsonlog/jsonlogbytes.go)."""
    out = bytearray(b'"')
    text = data.decode("utf-8", "replace")
    for ch in text:
        c = ord(ch)
        if ch in '\\"':
            out += b"\\" + ch.encode()
        elif ch == "\n":
            out += b"\\n"
        elif ch == "\r":
            out += b"\\r"
        elif c < 0x20 or ch in "<>&":
            out += b"\\u00%02x" % c
        elif ch == "\ufffd":
            out += b"\\ufffd"
        elif ch in "\u2028\u2029":
            out += b"\\u%04x" % c
        else:
            out += ch.encode()
    return bytes(out + b'"')


def json_line(rec: Rec, attrs: bytes = b"") -> bytes:
    log = rec.message + (b"\n" if rec.complete else b"")
    head = b'{"log":' + _go_string(log) if log else b"{"
    sep = b"," if log else b""
    extra = b',"attrs":' + attrs if attrs else b""
    return (
        head
        + sep
        + b'"stream":"'
        + NAMES[rec.stream].encode()
        + b'"'
        + extra
        + b',"time":"'
        + rfc3339(rec.ts_ns, trim=True)
        + b'"}\n'
    )


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def local_entry(
    rec: Rec, *, partial_id: bytes = b"", ordinal: int = 0, last: bool = False, extra: bytes = b""
) -> bytes:
    """LogEntry as gogo-protobuf writes it (fields in order, proto3 defaults omitted)."""
    body = _field(1, NAMES[rec.stream].encode())
    if rec.ts_ns:
        body += _varint(2 << 3) + _varint(rec.ts_ns)
    if rec.message:
        body += _field(3, rec.message)
    if partial_id:
        body += _varint(4 << 3) + b"\x01"
        meta = (b"\x08\x01" if last else b"") + _field(2, partial_id)
        if ordinal:
            meta += _varint(3 << 3) + _varint(ordinal)
        body += _field(5, meta)
    body += extra
    size = len(body).to_bytes(4, "big")
    return size + body + size


def local_frames(recs: list[Rec]) -> bytes:
    """Frames as dockerd writes them: a piece is partial; the piece that ends a line is partial
    with last=true when pieces came before it in its stream."""
    out = []
    open_line: dict[int, int] = {}
    for rec in recs:
        pieces = open_line.get(rec.stream, 0)
        if rec.complete and not pieces:
            out.append(local_entry(rec))
            continue
        pieces += 1
        pid = b"%064x" % (rec.stream * 1000 + pieces)
        out.append(local_entry(rec, partial_id=pid, ordinal=pieces, last=rec.complete))
        if rec.complete:
            open_line.pop(rec.stream, None)
        else:
            open_line[rec.stream] = pieces
    return b"".join(out)


def k8s_line(rec: Rec, offset_minutes: int = 0) -> bytes:
    tag = b"F" if rec.complete else b"P"
    ts = rfc3339(rec.ts_ns, offset_minutes=offset_minutes)
    return b"%s %s %s %s\n" % (ts, NAMES[rec.stream].encode(), tag, rec.message)


def expected(recs: list[Rec]) -> list[tuple[int, int, bytes, bytes, bool]]:
    return [(r.stream, r.ts_ns, rfc3339(r.ts_ns), r.message, r.complete) for r in recs]


def got(lines: list) -> list[tuple[int, int, bytes, bytes, bool]]:
    return [(x.stream, x.ts_ns, x.timestamp, x.message, x.complete) for x in lines]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


def feed_all(parser, chunks: list[bytes]) -> list:
    out = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


timestamps = st.integers(min_value=0, max_value=4_102_444_800 * NS - 1)  # 1970 .. 2099
cuts = st.lists(st.integers(min_value=0), max_size=20)


def records(message: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[Rec]]:
    return st.lists(
        st.builds(Rec, st.sampled_from([STDOUT, STDERR]), timestamps, message, st.booleans()),
        max_size=25,
    )
