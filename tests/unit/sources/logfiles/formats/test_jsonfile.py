from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from bridge.core.record import STDERR, STDOUT
from bridge.sources.logfiles.formats.jsonfile import JSON_FILE, JsonFileParser
from bridge.sources.logfiles.formats.lines import MAX_LINE_BYTES

from ..encode import Rec, cuts, expected, feed_all, got, json_line, records, split_at

ATTRS = b'{"app":"web"}'
# Captured from dockerd 20.10.24 (`docker run -l app=web --log-opt labels=app ... sh -c 'echo
# hello; printf "\377x <a&b> \"q\" \\\\ tab\there\n"; echo err >&2; head -c 17000 /dev/zero |
# tr "\0" a; echo; printf tail-no-nl'`): invalid UTF-8 already U+FFFD, <>& and tab escaped, the
# 17001-byte line cut at 16 KiB into two pieces sharing one timestamp, whose trailing zero Go
# trimmed ("...79011263Z"), and a last piece left without a newline at exit.
REAL = (
    b'{"log":"hello\\n","stream":"stdout","attrs":{"app":"web"},"time":"2026-12-02T08:21:03.787908723Z"}\n'
    b'{"log":"err\\n","stream":"stderr","attrs":{"app":"web"},"time":"2026-12-02T08:21:03.789800224Z"}\n'
    b'{"log":"\\ufffdx \\u003ca\\u0026b\\u003e \\"q\\" \\\\ tab\\u0009here\\n","stream":"stdout","attrs":{"app":"web"},"time":"2026-12-02T08:21:03.789816127Z"}\n'
    b'{"log":"'
    + b"a"
    * 16384
    + b'","stream":"stdout","attrs":{"app":"web"},"time":"2026-12-02T08:21:03.79011263Z"}\n'
    b'{"log":"'
    + b"a"
    * 616
    + b'\\n","stream":"stdout","attrs":{"app":"web"},"time":"2026-12-02T08:21:03.79011263Z"}\n'
    b'{"log":"tail-no-nl","stream":"stdout","attrs":{"app":"web"},"time":"2026-12-02T08:21:03.836172187Z"}\n'
)
REAL_PLAIN = (  # without attrs; the second time shows Go trimming two zeros
    b'{"log":"a\\n","stream":"stdout","time":"2026-12-02T08:21:05.680809922Z"}\n'
    b'{"log":"b\\n","stream":"stdout","time":"2026-12-02T08:21:05.6810165Z"}\n'
)

# dockerd never writes a newline inside `log` but at its end; json-file has U+FFFD for bad UTF-8
messages = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b""))


def normalized(recs: list[Rec]) -> list[Rec]:
    return [
        Rec(r.stream, r.ts_ns, r.message.decode("utf-8", "replace").encode(), r.complete)
        for r in recs
    ]


def test_real_dockerd_file():
    parser = JsonFileParser()
    lines = parser.feed(REAL)
    assert [(x.stream, x.message[:12], x.complete) for x in lines] == [
        (STDOUT, b"hello", True),
        (STDERR, b"err", True),
        (STDOUT, b'\xef\xbf\xbdx <a&b> "', True),
        (STDOUT, b"a" * 12, False),
        (STDOUT, b"a" * 12, True),
        (STDOUT, b"tail-no-nl", False),
    ]
    assert lines[2].message == '\ufffdx <a&b> "q" \\ tab\there'.encode()
    assert [len(x.message) for x in lines[3:5]] == [16384, 616]
    assert lines[3].timestamp == lines[4].timestamp == b"2026-12-02T08:21:03.790112630Z"
    assert lines[0].timestamp == b"2026-12-02T08:21:03.787908723Z"
    assert lines[-1].end == len(REAL)
    assert parser.malformed == parser.oversized == parser.pending_bytes == 0


def test_trimmed_fractions_are_padded_back_to_nine_digits():
    lines = JsonFileParser().feed(
        REAL_PLAIN + b'{"log":"c\\n","stream":"stdout","time":"2026-12-02T08:21:06Z"}\n'
    )
    assert [x.timestamp for x in lines] == [
        b"2026-12-02T08:21:05.680809922Z",
        b"2026-12-02T08:21:05.681016500Z",
        b"2026-12-02T08:21:06.000000000Z",
    ]
    assert lines[1].ts_ns == 1796199665681016500


def test_a_time_in_another_zone_is_expressed_in_utc():
    line = b'{"log":"x\\n","stream":"stderr","time":"2026-12-02T09:21:05.5+01:00"}\n'
    (x,) = JsonFileParser().feed(line)
    assert x.timestamp == b"2026-12-02T08:21:05.500000000Z"


@given(records(messages), cuts)
def test_any_records_at_any_split_come_back(recs, cut):
    data = b"".join(json_line(r, attrs=ATTRS if r.ts_ns % 2 else b"") for r in recs)
    parser = JsonFileParser(offset=100)
    lines = feed_all(parser, split_at(data, cut))
    assert got(lines) == expected(normalized(recs))
    assert [x.end for x in lines] == [
        100 + len(data) - len(data.split(b"\n", i + 1)[-1]) for i in range(len(recs))
    ]
    assert parser.malformed == parser.pending_bytes == 0
    assert parser.offset == 100 + len(data)


@given(st.binary(max_size=400), cuts, st.integers(min_value=1, max_value=80))
@example(b'{"log":"x\\n","stream":"stdout","time":"2026-12-02T08:21:05.68080992Z"}\n', [], 80)
@example(b"[" * 100_000 + b"\n", [], 200_000)
def test_arbitrary_bytes_never_raise_and_any_split_gives_the_same_lines(data, cut, cap):
    whole = JsonFileParser(max_line_bytes=cap)
    one = whole.feed(data)
    split = JsonFileParser(max_line_bytes=cap)
    assert feed_all(split, split_at(data, cut)) == one
    assert (split.malformed, split.oversized, split.offset) == (
        whole.malformed,
        whole.oversized,
        whole.offset,
    )


def test_malformed_lines_are_skipped_and_counted():
    good = json_line(Rec(STDOUT, 5, b"ok"))
    data = (
        good + b"not json\n" + b'{"log":1}\n' + b'{"log":"x","stream":"stdin","time":"x"}\n' + good
    )
    parser = JsonFileParser()
    assert [x.message for x in parser.feed(data)] == [b"ok", b"ok"]
    assert parser.malformed == 3
    assert "no log, stream or time" in parser.last_error


def test_an_overlong_line_is_dropped_and_parsing_goes_on_at_the_next():
    good = json_line(Rec(STDOUT, 5, b"ok"))
    parser = JsonFileParser()
    out = parser.feed(good)
    for _ in range(20):  # 1.3 MiB without a newline, in reads of 64 KiB
        out += parser.feed(b"x" * 65536)
    assert parser.pending_bytes <= MAX_LINE_BYTES
    out += parser.feed(b"yyy\n" + good)
    assert [x.message for x in out] == [b"ok", b"ok"]
    assert parser.oversized == 1
    assert out[1].end == len(good) * 2 + 20 * 65536 + 4


def test_reset_drops_the_held_piece_and_moves_the_offset():
    parser = JsonFileParser()
    assert parser.feed(b'{"log":"cut') == []
    assert parser.reset(0) == 11
    (x,) = parser.feed(json_line(Rec(STDOUT, 7, b"new")))
    assert x.end == len(json_line(Rec(STDOUT, 7, b"new")))


@given(st.text(max_size=40), st.sampled_from(["stdout", "stderr"]), st.booleans())
def test_the_fast_path_agrees_with_json_loads(text, stream, newline):
    log = text + ("\n" if newline else "")
    line = json.dumps(
        {"log": log, "stream": stream, "time": "2026-12-02T08:21:05.680809922Z"},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8", "surrogatepass")
    fast = JsonFileParser().line(line, 1)
    slow = JsonFileParser()._decoded(line, 1)
    assert fast == slow


def test_probe_finds_the_first_whole_line_after_a_cut():
    data = b"".join(json_line(Rec(STDOUT, t, b"m%d" % t)) for t in range(1, 4))
    first = len(json_line(Rec(STDOUT, 1, b"m1")))
    assert JSON_FILE.probe(data, True) == (0, first, 1)
    assert JSON_FILE.probe(data[5:], False) == (first - 5, 2 * first - 5, 2)
    assert JSON_FILE.probe(data[first - 1 :], False) == (1, first + 1, 2)  # a line at the cut
    assert JSON_FILE.probe(data[:10], True) is None
    assert JSON_FILE.starts_line(b"", data) and JSON_FILE.starts_line(data[:first], b"")
    assert not JSON_FILE.starts_line(data[:5], data[5:])
