from __future__ import annotations

from bridge.record import Record
from bridge.transforms.ratelimit import RateLimiter

TS = b"2026-11-28T00:13:57.123456789Z"


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
