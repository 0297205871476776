from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.record import Record
from bridge.transforms.ratelimit import RateLimiter

TS = b"2026-11-28T00:13:57.123456789Z"


def rec(n: int, stream: int = 1, ts: bytes = TS) -> Record:
    return Record(stream, b"x", ts, (n, 1), (n, 1))


def test_bucket_drops_the_excess_and_announces_it_once_per_interval():
    limiter = RateLimiter(10, 10, interval=5.0)
    passed = dropped = 0
    for i in range(100):  # 100 lines in 1 s: 10 burst + ~10 refilled
        r = limiter.apply(Record(1, b"x", TS, (i, 1), (i, 1)), now=i / 100)
        passed += r.dropped is None
        dropped += r.dropped == "rate_limited"
    assert 18 <= passed <= 21 and passed + dropped == 100
    assert limiter.notice(1.0, "noisy") is None  # the interval is not over
    notice = limiter.notice(5.1, "noisy")
    assert notice.message == f"Suppressed {dropped} lines from container noisy".encode()
    assert dict(notice.extra_fields) == {b"N_DROPPED": str(dropped).encode()}
    assert notice.last == (99, 1)
    assert limiter.notice(20.0, "noisy") is None


def test_final_notice_is_forced():
    limiter = RateLimiter(1, 1)
    limiter.apply(Record(1, b"a", TS, (1, 1), (1, 1)), 0)
    limiter.apply(Record(1, b"b", TS, (2, 1), (2, 1)), 0)
    assert limiter.notice(0.1, "c", force=True).message == b"Suppressed 1 lines from container c"


def test_the_notice_carries_the_last_record_seen_on_its_stream():
    """r3: it carried the last *dropped* one, older than lines forwarded since."""
    limiter = RateLimiter(1, 1, interval=10.0)
    limiter.apply(rec(1), 0.0)
    assert limiter.apply(rec(2, ts=b"dropped"), 0.0).dropped == "rate_limited"
    assert limiter.apply(rec(3, ts=b"forwarded"), 5.0).dropped is None
    limiter.apply(rec(4, stream=2, ts=b"other stream"), 9.0)
    notice = limiter.notice(10.0, "c")
    assert (notice.stream, notice.timestamp, notice.first, notice.last) == (
        1,
        b"forwarded",
        (3, 1),
        (3, 1),
    )


def test_time_zero_is_a_time_like_any_other():
    """`now` is monotonic: 0.0 is a valid reading, not "never"."""
    limiter = RateLimiter(1, 1)
    assert limiter.apply(rec(1), 0.0).dropped is None
    assert limiter.apply(rec(2), 0.0).dropped == "rate_limited"
    assert limiter.apply(rec(3), 5.0).dropped is None


def test_time_going_backwards_refills_nothing_and_takes_nothing():
    """r14: a clock stepped back an hour made every later line dropped."""
    limiter = RateLimiter(1000, 1000)
    limiter.apply(rec(1), 1_800_000_000.0)
    now = 1_800_000_000.0 - 3600
    passed = 0
    for i in range(100):
        now += 6
        passed += limiter.apply(rec(i), now).dropped is None
    assert passed == 100


def test_records_dropped_before_the_limiter_are_seen_but_not_charged():
    limiter = RateLimiter(1, 1)
    earlier = rec(1)
    earlier.dropped = "too_large"
    assert limiter.apply(earlier, 0.0).dropped == "too_large"
    assert limiter.apply(rec(2), 0.0).dropped is None
    assert limiter.apply(rec(3), 0.0).dropped == "rate_limited"
    assert limiter.notice(0.0, "c", force=True).message.startswith(b"Suppressed 1 lines")


@given(st.lists(st.tuples(st.floats(0, 100), st.sampled_from([1, 2])), max_size=50))
def test_a_notice_is_never_behind_what_its_stream_forwarded(events):
    limiter = RateLimiter(2, 2, interval=1.0)
    forwarded: dict[int, tuple[int, int]] = {}
    now = 0.0
    for n, (step, stream) in enumerate(events, 1):
        now += step / 10
        if limiter.apply(rec(n, stream), now).dropped is None:
            forwarded[stream] = (n, 1)
        notice = limiter.notice(now, "c")
        if notice is not None:
            assert notice.last >= forwarded.get(notice.stream, (0, 0))
