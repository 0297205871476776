"""What the inner-journal reader makes of entries before queuing them: fields, rate limit,
notices, batches, and the follower's counters as metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bridge.config import TransformsConfig
from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo, encode_pairs
from bridge.sources.inner_journal.gather import (
    ENTRY_OVERHEAD_BYTES,
    Gatherer,
    Notice,
    StatsReport,
    TokenBucket,
    inner_container_fields,
    rate_limit_of,
)
from bridge.sources.inner_journal.options import FollowerStats
from bridge.sources.inner_journal.position import InnerPosition
from bridge.sources.inner_journal.protocol import InnerEntry, decode_native
from bridge.telemetry import Telemetry
from bridge.transforms import build_chain

SEQNUM_ID = "1" * 32
BOOT = "2" * 32


def pos(i: int) -> InnerPosition:
    return InnerPosition(f"s={SEQNUM_ID};i={i:x};b={BOOT};m={i:x};t={1000 + i:x};x={i:x}")


def inner(i: int, message: bytes | None = None) -> InnerEntry:
    return InnerEntry(
        message if message is not None else b"line %d" % i,
        6,
        b"SYSLOG_IDENTIFIER=app\nINNER_PID=42\n",
        1000 + i,
        i,
        pos(i),
    )


CONTAINER = [
    ("CONTAINER_ID", "abc"),
    ("CONTAINER_NAME", "web"),
    ("CONTAINER_TAG", "web"),
    ("SYSLOG_IDENTIFIER", "web"),
    ("IMAGE_NAME", "img"),
    ("CODE_FILE", "from-a-label"),
    ("ERRNO", "from-a-label"),
    ("INNER_SYSTEMD_UNIT", "forged.service"),
    ("TEAM", "shop"),
]


def test_inner_entries_keep_their_own_identifier_and_labels_cannot_pass_for_inner_fields():
    fields, tag = inner_container_fields(encode_pairs(CONTAINER))
    assert tag == b"web"
    assert decode_native(fields) == (
        (b"CONTAINER_ID", b"abc"),
        (b"CONTAINER_NAME", b"web"),
        (b"CONTAINER_TAG", b"web"),
        (b"IMAGE_NAME", b"img"),
        (b"TEAM", b"shop"),
    )


def test_a_value_with_a_newline_survives_the_round_trip():
    fields, _ = inner_container_fields(encode_pairs([("TEAM", "a\nb"), ("SYSLOG_IDENTIFIER", "x")]))
    assert decode_native(fields) == ((b"TEAM", b"a\nb"),)


def test_the_token_bucket_refills_at_its_rate_and_ignores_a_clock_step_back():
    bucket = TokenBucket(2, 3)
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5)  # one token back after half a second
    assert not bucket.take(0.5)
    assert not bucket.take(-100)  # the clock went back: nothing refilled
    assert bucket.take(1.0)


def test_without_a_limit_every_entry_passes_and_a_batch_reaches_its_last_entry():
    gatherer = Gatherer(lambda: "web")
    gatherer.refresh(encode_pairs(CONTAINER), None)
    for i in range(1, 4):
        assert gatherer.add(inner(i), 0.0, 0)
    batch = gatherer.take()
    assert batch is not None
    assert [e.message for e in batch.entries] == [b"line 1", b"line 2", b"line 3"]
    assert batch.last == pos(3)
    expected = sum(len(e.message) + len(e.native_fields) for e in batch.entries)
    assert batch.nbytes == expected + 3 * ENTRY_OVERHEAD_BYTES
    assert gatherer.take() is None  # nothing new
    assert gatherer.nbytes == 0


def test_the_drained_end_is_where_the_batch_reaches():
    gatherer = Gatherer(lambda: "web")
    gatherer.add(inner(1), 0.0, 0)
    end = InnerPosition(pos(1).cursor, drained=True)
    batch = gatherer.take(end, final=True)
    assert batch is not None and batch.last == end
    # an end with nothing read since is still worth queuing: it says "drained"
    batch = gatherer.take(end, final=True)
    assert batch is not None and batch.entries == [] and batch.last == end


def test_rate_limited_entries_still_move_the_position_and_are_announced_with_the_next_one():
    gatherer = Gatherer(lambda: "web")
    gatherer.refresh(encode_pairs(CONTAINER), (1.0, 2, 10.0))
    passed = [gatherer.add(inner(i), 0.0, 5) for i in range(1, 6)]
    assert passed == [True, True, False, False, False]
    batch = gatherer.take()
    assert batch is not None
    assert [e.message for e in batch.entries] == [b"line 1", b"line 2"]
    assert batch.last == pos(5)  # the dropped ones are consumed
    # within the interval: a passing entry does not bring the notice yet
    assert gatherer.add(inner(6), 1.0, 6)
    batch = gatherer.take()
    assert batch is not None and [e.message for e in batch.entries] == [b"line 6"]
    assert not gatherer.add(inner(7), 1.0, 7)
    # after the interval: the notice goes just before the next entry that passes
    assert gatherer.add(inner(8), 11.0, 8)
    batch = gatherer.take()
    assert batch is not None
    notice, entry = batch.entries
    assert isinstance(notice, Notice)
    assert notice.message == b"Suppressed 4 inner journal entries from container web"
    assert notice.priority == 4
    assert notice.position == pos(7)  # the last one it counts, never past an unread entry
    assert dict(decode_native(notice.native_fields)) == {
        b"SYSLOG_IDENTIFIER": b"web",
        b"N_DROPPED": b"4",
    }
    assert entry.message == b"line 8"


def test_a_pending_notice_goes_out_when_the_journal_ends():
    gatherer = Gatherer(lambda: "web")
    gatherer.refresh(encode_pairs(CONTAINER), (1.0, 1, 10.0))
    gatherer.add(inner(1), 0.0, 0)
    gatherer.add(inner(2), 0.0, 0)
    first = gatherer.take()
    assert first is not None and first.last == pos(2)
    batch = gatherer.take(final=True, now_us=99)
    assert batch is not None
    (notice,) = batch.entries
    assert isinstance(notice, Notice) and notice.position == pos(2) and notice.realtime_us == 99
    assert batch.last == pos(2)


def test_the_limit_comes_from_the_containers_transforms_and_a_reload_changes_it():
    info = ContainerInfo(id="a" * 64, name="web", image_name="img", image_id="sha256:b")
    handle = ContainerHandle.create(info, b"", Cursor())
    assert rate_limit_of(handle) is None
    config = TransformsConfig(rate_limit_lines_per_second=100, rate_limit_burst=50)
    events = _NoEvents()
    handle.chain = build_chain(config, {}, 1 << 20, lambda: "web", lambda *_: None, events)
    assert rate_limit_of(handle) == (100, 50, 10.0)
    labels = {"journald-bridge.rate_limit": "10"}
    handle.next_chain = build_chain(config, labels, 1 << 20, lambda: "web", lambda *_: None, events)
    assert rate_limit_of(handle) == (10, 50, 10.0)  # the reload's chain, before the writer swaps it
    handle.next_chain = None
    assert rate_limit_of(handle) is None


class _NoEvents:
    def line_failed(self, step: str) -> None:
        pass

    def fields_dropped(self, reason: str, count: int) -> None:
        pass


def test_follower_totals_become_increments():
    registry = CollectorRegistry()
    report = StatsReport(Telemetry(registry))
    stats = FollowerStats(
        stalls=1, problems={"file": 2}, fields_dropped={"count": 3, "reserved": 1}
    )
    report.report(stats)
    stats.stalls, stats.exits = 2, 1
    stats.problems["bad"] = 1
    report.report(stats)
    report.report(stats)

    def errors(kind: str) -> float | None:
        return registry.get_sample_value(
            "journald_bridge_inner_journal_errors_total", {"kind": kind}
        )

    assert (errors("stall"), errors("exit"), errors("file"), errors("bad")) == (2, 1, 2, 1)
    dropped = registry.get_sample_value("journald_bridge_fields_dropped_total", {"reason": "count"})
    assert dropped == 3
    other = registry.get_sample_value("journald_bridge_fields_dropped_total", {"reason": "other"})
    assert other is None  # renamed or refused names are not counted as caps
