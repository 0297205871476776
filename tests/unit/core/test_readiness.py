"""readable(): descriptors past select()'s 1024, which the bridge holds when it keeps many
log files open for its readers."""

from __future__ import annotations

import os
import resource

import pytest

from bridge.core.readiness import readable

HIGH = 1500


@pytest.fixture
def high_pipe():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH:
        pytest.skip("RLIMIT_NOFILE too low for a descriptor past 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH + 1), hard))
    r, w = os.pipe()
    os.dup2(r, HIGH)
    os.close(r)
    try:
        yield HIGH, w
    finally:
        os.close(HIGH)
        os.close(w)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_descriptor_past_1024_is_waited_for(high_pipe) -> None:
    r, w = high_pipe
    assert readable([r], 0.01) == []
    os.write(w, b"x")
    assert readable([r], None) == [r]


def test_only_the_ready_are_returned_and_a_closed_writer_is_ready(high_pipe) -> None:
    r, _ = high_pipe
    other_r, other_w = os.pipe()
    try:
        assert readable([r, other_r], 0) == []
        os.close(other_w)  # the writer gone: the end of the pipe, readable
        other_w = -1
        assert readable([r, other_r], 1.0) == [other_r]
    finally:
        os.close(other_r)
        if other_w >= 0:
            os.close(other_w)
