"""Transforms on real containers."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

PY_TRACE = (
    "echo 'Traceback (most recent call last):'; "
    "echo '  File \"app.py\", line 3, in <module>'; echo '    main()'; "
    "echo 'ZeroDivisionError: division by zero'; echo done"
)
JAVA_TRACE = (
    "printf 'java.lang.IllegalStateException: boom\\n\\tat com.example.App.run(App.java:10)\\n"
    "\\tat com.example.App.main(App.java:3)\\nCaused by: java.io.IOException: disk\\n\\t... 2 more\\n'; echo done"
)


def test_python_traceback_and_java_stack_trace_arrive_as_one_entry_each(
    bridge, journald, containers
):
    bridge.start()
    py = containers.run(PY_TRACE, labels={"journald-bridge.multiline": "python"})
    java = containers.run(JAVA_TRACE, labels={"journald-bridge.multiline": "java"})
    assert journald.wait_messages(py.id, 2) == [
        b'Traceback (most recent call last):\n  File "app.py", line 3, in <module>\n    main()\n'
        b"ZeroDivisionError: division by zero",
        b"done",
    ]
    assert journald.wait_messages(java.id, 2) == [
        b"java.lang.IllegalStateException: boom\n\tat com.example.App.run(App.java:10)\n"
        b"\tat com.example.App.main(App.java:3)\nCaused by: java.io.IOException: disk\n\t... 2 more",
        b"done",
    ]
    assert bridge.metric("journald_bridge_multiline_records_total") == 2


def test_an_open_record_is_flushed_after_the_timeout(bridge, journald, containers):
    bridge.configure(transforms={"multiline_flush_ms": 300})
    bridge.start()
    c = containers.run(
        "echo 'Traceback (most recent call last):'; echo '  line'; sleep 30",
        labels={"journald-bridge.multiline": "python"},
    )
    assert journald.wait_messages(c.id, 1, timeout=10) == [
        b"Traceback (most recent call last):\n  line"
    ]


def test_json_lines_set_priority_and_fields_but_never_fixed_or_trusted_ones(
    bridge, journald, containers
):
    bridge.start()
    script = (
        'echo \'{"msg":"disk full","level":"error","user":"bob","attempt":3}\'; '
        'echo \'{"_PID":"1","CONTAINER_NAME":"evil","MESSAGE":"x"}\'; echo \'not json\''
    )
    c = containers.run(
        script, name=f"json-{containers.label}", labels={"journald-bridge.parse": "json"}
    )
    journald.wait_messages(c.id, 3)
    entries = {e["MESSAGE"]: e for e in journald.entries(CONTAINER_ID_FULL=c.id)}
    error = entries[b"disk full"]
    assert error["PRIORITY"] == b"3" and error["USER"] == b"bob" and error["ATTEMPT"] == b"3"
    evil = entries[b'{"_PID":"1","CONTAINER_NAME":"evil","MESSAGE":"x"}']
    assert evil["CONTAINER_NAME"] == f"json-{containers.label}".encode()
    assert evil["_PID"] != b"1" and evil["PRIORITY"] == b"6"
    assert entries[b"not json"]["PRIORITY"] == b"6"


def test_priority_detection_for_plain_text(bridge, journald, containers):
    bridge.configure(transforms={"detect_priority_prefix": True})
    bridge.start()
    c = containers.run(
        "echo '<4>careful'; echo 'WARN words'; echo plain >&2",
        labels={"journald-bridge.detect_priority": "all"},
    )
    journald.wait_messages(c.id, 3)
    got = {e["MESSAGE"]: e["PRIORITY"] for e in journald.entries(CONTAINER_ID_FULL=c.id)}
    assert got == {b"careful": b"4", b"WARN words": b"4", b"plain": b"3"}


def test_a_noisy_container_is_limited_and_its_quiet_neighbour_loses_nothing(
    bridge, journald, containers
):
    bridge.configure(transforms={"rate_limit_interval_seconds": 2.0})
    bridge.start()
    total = 200000
    started = time.monotonic()
    noisy = containers.run(
        f"yes noisy | head -n {total}; sleep 5",
        labels={"journald-bridge.rate_limit": "1000", "journald-bridge.rate_limit_burst": "1000"},
    )
    quiet = containers.run("for i in $(seq 1 300); do echo q$i; sleep 0.01; done")
    assert sorted(journald.wait_messages(quiet.id, 300, timeout=120)) == sorted(
        b"q%d" % i for i in range(1, 301)
    )

    def accounted():
        entries = journald.entries(CONTAINER_ID_FULL=noisy.id)
        passed = sum(1 for e in entries if e["MESSAGE"] == b"noisy")
        dropped = sum(int(e["N_DROPPED"]) for e in entries if "N_DROPPED" in e)
        return (passed, dropped) if passed + dropped == total else None

    passed, dropped = wait_until(
        accounted, 120, "every noisy line forwarded or counted", interval=1
    )
    elapsed = time.monotonic() - started
    print(f"noisy: {passed} forwarded, {dropped} suppressed in {elapsed:.1f} s under 1000 lines/s")
    assert passed <= 1000 * elapsed + 1000
    assert bridge.metric("journald_bridge_lines_dropped_total", reason="rate_limited") == dropped
    notice = next(e for e in journald.entries(CONTAINER_ID_FULL=noisy.id) if "N_DROPPED" in e)
    assert (
        notice["MESSAGE"].startswith(b"Suppressed ")
        and notice["CONTAINER_NAME"] == noisy.name.encode()
    )


def test_a_bad_regex_label_leaves_the_container_forwarding_plain_lines(
    bridge, journald, containers
):
    bridge.start()
    c = containers.run(
        "echo one; echo '  two'",
        labels={
            "journald-bridge.multiline_start": "(",
            "journald-bridge.multiline_continue": "^\\s",
        },
    )
    assert journald.wait_messages(c.id, 2) == [b"one", b"  two"]
    assert bridge.metric("journald_bridge_transform_errors_total", kind="multiline") == 1
    assert bridge.log().count("label journald-bridge.multiline") == 1
