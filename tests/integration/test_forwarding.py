"""Every container's output in the journal, Docker-compatible, on real services."""

from __future__ import annotations

import threading
import time

import pytest

from tests.integration.conftest import docker_logs, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("each_source")]


def long_line(size: int, char: str) -> str:
    """Shell for one line of `size` bytes (busybox awk is far too slow for this)."""
    return f"head -c {size} /dev/zero | tr '\\0' {char}; echo"


@pytest.mark.engines("docker26", "podman5:files", "podman5rootless:files")
def test_the_done_criterion_two_entries_with_docker_fields(
    bridge, journald, containers, engine, each_source
):
    # Podman's API stamps lines with whole seconds; its files and Docker have nanoseconds
    stamp_length = 20 if (engine.spec.kind, each_source) == ("podman", "api") else 30
    bridge.start()
    name = f"web-{containers.label}"
    out = containers.run(
        "echo hi; echo oops >&2", name=name, detach=False, remove=True, stdout=True, stderr=True
    )
    assert out is not None
    entries = wait_until(
        lambda: len(e := journald.entries(CONTAINER_NAME=name)) >= 2 and e, 20, "two entries"
    )
    by_message = {e["MESSAGE"]: e for e in entries}
    assert set(by_message) == {b"hi", b"oops"}
    hi, oops = by_message[b"hi"], by_message[b"oops"]
    assert hi["PRIORITY"] == b"6"
    assert oops["PRIORITY"] == b"3"
    full_id = hi["CONTAINER_ID_FULL"].decode()
    assert len(full_id) == 64 and hi["CONTAINER_ID"] == full_id[:12].encode()
    for entry in (hi, oops):
        assert entry["CONTAINER_NAME"] == name.encode()
        assert entry["CONTAINER_TAG"] == entry["SYSLOG_IDENTIFIER"] == name.encode()
        assert entry["IMAGE_NAME"] == containers.image.encode()
        stamp = entry["SYSLOG_TIMESTAMP"]
        assert len(stamp) == stamp_length and stamp.endswith(b"Z"), stamp
    assert hi["CONTAINER_STREAM"] == b"stdout" and oops["CONTAINER_STREAM"] == b"stderr"


def test_metadata_fields_compose_labels_env_and_tag(bridge, journald, containers):
    bridge.configure(
        forward={"labels": ["team"], "env_regex": "^APP_", "tag": "{{.ImageName}}/{{.Name}}"}
    )
    bridge.start()
    c = containers.run(
        "echo meta",
        name=f"meta-{containers.label}",
        labels={
            "com.docker.compose.project": "shop",
            "com.docker.compose.service": "api",
            "team": "core",
            "CONTAINER_NAME": "evil",  # must not overwrite the fixed field
        },
        environment={"APP_MODE": "prod", "SECRET": "no"},
    )
    (entry,) = journald.wait_messages(c.id, 1) and journald.entries(CONTAINER_ID_FULL=c.id)
    assert entry["COMPOSE_PROJECT"] == b"shop" and entry["COMPOSE_SERVICE"] == b"api"
    assert entry["TEAM"] == b"core" and entry["APP_MODE"] == b"prod" and "SECRET" not in entry
    assert entry["CONTAINER_NAME"] == f"meta-{containers.label}".encode()
    assert (
        entry["SYSLOG_IDENTIFIER"] == f"bridge-test/busybox:latest/meta-{containers.label}".encode()
    )
    # SYSLOG_TIMESTAMP is Docker's own timestamp of the line.
    stamped = c.logs(timestamps=True).split(b" ", 1)[0]
    assert entry["SYSLOG_TIMESTAMP"] == stamped


def test_a_rename_applies_to_the_following_lines(bridge, journald, containers, docker_client):
    bridge.start()
    c = containers.run("echo before; sleep 2; echo after; sleep 30", name=f"old-{containers.label}")
    journald.wait_messages(c.id, 1)
    c.rename(f"new-{containers.label}")
    entries = wait_until(
        lambda: len(e := journald.entries(CONTAINER_ID_FULL=c.id)) >= 2 and e, 20, "2 entries"
    )
    names = {e["MESSAGE"]: e["CONTAINER_NAME"] for e in entries}
    assert names == {
        b"before": f"old-{containers.label}".encode(),
        b"after": f"new-{containers.label}".encode(),
    }


def test_lines_queued_at_a_rename_keep_the_name_they_were_read_under(bridge, journald, containers):
    old, new, burst = f"old-{containers.label}", f"new-{containers.label}", 20_000
    bridge.start()
    journald.freeze()  # the writer stalls: the burst is read, and waits in the bridge's queue
    try:
        c = containers.run(
            f"seq {burst} | sed 's/^/before /'; "
            "while [ ! -e /go ]; do sleep 0.1; done; echo after; sleep 30",
            name=old,
        )

        def burst_queued() -> bool:  # the queue stopped growing: the reader has read it all
            pending = bridge.metric("journald_bridge_pending_bytes")
            time.sleep(1)
            return pending > 0 and bridge.metric("journald_bridge_pending_bytes") == pending

        wait_until(burst_queued, 60, "the burst in the queue")
        c.rename(new)
        wait_until(lambda: f"renamed to {new}" in bridge.log(), 20, "the rename event")
        c.exec_run(["sh", "-c", ": > /go"])
        wait_until(lambda: b"after" in c.logs(), 20, "the line after the rename")
    finally:
        journald.thaw()
    entries = wait_until(
        lambda: len(e := journald.entries(CONTAINER_ID_FULL=c.id)) > burst and e, 120, "all lines"
    )
    names: dict[bytes, list[bytes]] = {}
    for entry in entries:
        names.setdefault(entry["CONTAINER_NAME"], []).append(entry["MESSAGE"])
    assert names.keys() == {old.encode(), new.encode()}
    assert names[old.encode()] == [b"before %d" % i for i in range(1, burst + 1)]
    assert names[new.encode()] == [b"after"]


@pytest.mark.engines("docker26")
@pytest.mark.parametrize("driver", ["local", "json-file"])
def test_message_bytes_arrive_byte_for_byte(bridge, journald, containers, driver):
    bridge.start()
    # invalid UTF-8, NUL, CR, ANSI escapes, an empty line, a tab, and no newline at the very end
    script = (
        r"printf 'bad \377\376 utf8\n'; printf 'nul \000 byte\n'; printf 'cr\r\n'; "
        r"printf '\033[31mred\033[0m\n'; printf '\n'; printf 'tab\there\n'; "
        r"printf 'last without newline'"
    )
    c = containers.run(script, log_config={"type": driver})
    messages = journald.wait_messages(c.id, 7)
    assert sorted(messages) == sorted(docker_logs(c))
    expected = [
        b"nul \x00 byte",
        b"cr\r",
        b"\x1b[31mred\x1b[0m",
        b"",
        b"tab\there",
        b"last without newline",
    ]
    # json-file stores lines as JSON strings: dockerd itself replaces invalid UTF-8 there.
    bad = b"bad \xff\xfe utf8" if driver == "local" else "bad \ufffd\ufffd utf8".encode()
    assert sorted(messages) == sorted([bad, *expected])


@pytest.mark.engines("docker26:files", "podman5:files")
def test_long_lines_are_rejoined_and_overlong_ones_split_into_marked_partials(
    bridge, journald, containers
):
    bridge.configure(forward={"max_line_bytes": 262144})
    bridge.start()
    # 100 KiB (7 Docker pieces) -> one entry; 1 MiB -> 4 partial entries of 256 KiB.
    c = containers.run(f"{long_line(102400, 'a')}; {long_line(1048576, 'b')}; echo end")
    entries = journald.wait_for_line(c.id, b"end")
    whole = [e for e in entries if "CONTAINER_PARTIAL_ID" not in e and e["MESSAGE"] != b"end"]
    assert [len(e["MESSAGE"]) for e in whole] == [102400] and set(whole[0]["MESSAGE"]) == {ord("a")}
    parts = sorted(
        (e for e in entries if "CONTAINER_PARTIAL_ID" in e),
        key=lambda e: int(e["CONTAINER_PARTIAL_ORDINAL"]),
    )
    assert b"".join(e["MESSAGE"] for e in parts) == b"b" * 1048576
    assert all(len(e["MESSAGE"]) <= 262144 for e in parts)
    assert [e["CONTAINER_PARTIAL_LAST"] for e in parts] == [b"false"] * (len(parts) - 1) + [b"true"]
    assert all(e.get("CONTAINER_PARTIAL_MESSAGE") == b"true" for e in parts[:-1])
    assert "CONTAINER_PARTIAL_MESSAGE" not in parts[-1]
    assert len({e["CONTAINER_PARTIAL_ID"] for e in parts}) == 1


def test_a_5_mib_line_goes_through_and_the_neighbour_loses_nothing(bridge, journald, containers):
    bridge.start()
    quiet = containers.run("for i in $(seq 1 200); do echo q$i; sleep 0.01; done")
    big = containers.run(f"{long_line(5242880, 'z')}; echo after")
    entries = journald.wait_for_line(big.id, b"after")
    assert sum(len(e["MESSAGE"]) for e in entries if e["MESSAGE"] != b"after") == 5242880
    assert sorted(journald.wait_messages(quiet.id, 200)) == sorted(
        b"q%d" % i for i in range(1, 201)
    )
    assert bridge.metric("journald_bridge_journal_memfd_sends_total") == 0  # 8 MiB send buffer


def test_no_output_and_instant_exit(bridge, journald, containers):
    bridge.start()
    silent = containers.run("true")
    fast = containers.run("echo fast")
    assert journald.wait_messages(fast.id, 1) == [b"fast"]
    silent.wait(timeout=30)
    time.sleep(1)
    assert journald.messages(silent.id) == []
    assert bridge.get("/readyz")[0] == 200


def test_tty_container_is_read_as_a_raw_stream(bridge, journald, containers):
    bridge.start()
    c = containers.run("echo one; echo two", tty=True)
    messages = journald.wait_messages(c.id, 2)
    assert [m.rstrip(b"\r") for m in messages] == [b"one", b"two"]


def test_200_containers_starting_at_once(bridge, journald, containers, docker_client):
    bridge.start()
    started = []

    def start(n):
        started.append(containers.run(f"echo a{n}; echo b{n} >&2; echo c{n}"))

    threads = [threading.Thread(target=start, args=(n,)) for n in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 200
    wait_until(lambda: len(journald.entries()) >= 600, 120, "600 entries", interval=1)
    for c in started:
        assert sorted(journald.messages(c.id)) == sorted(docker_logs(c))


def test_filters_opt_out_label_and_excluded_name(bridge, journald, containers):
    bridge.configure(filter={"exclude_names": [f"skip-{containers.label}*"]})
    bridge.start()
    opted_out = containers.run("echo no", labels={"journald-bridge.enable": "false"})
    excluded = containers.run("echo no", name=f"skip-{containers.label}-1")
    kept = containers.run("echo yes")
    assert journald.wait_messages(kept.id, 1) == [b"yes"]
    for c in (opted_out, excluded):
        c.wait(timeout=30)
    time.sleep(1)
    assert journald.messages(opted_out.id) == [] and journald.messages(excluded.id) == []


def test_a_container_removed_while_being_read_harms_nobody(bridge, journald, containers):
    bridge.start()
    # A flood the bridge is still reading when the container goes; bounded, so that the
    # journal the test then reads stays small.
    doomed = containers.run("yes spam | head -n 200000; sleep 600")
    steady = containers.run("for i in $(seq 1 100); do echo s$i; sleep 0.02; done")
    wait_until(lambda: len(journald.messages(doomed.id)) > 100, 30, "spam")
    doomed.remove(force=True)
    assert sorted(journald.wait_messages(steady.id, 100)) == sorted(
        b"s%d" % i for i in range(1, 101)
    )
    assert bridge.get("/readyz")[0] == 200


def test_journald_absent_at_start_up_is_waited_for(bridge, journald, containers):
    journald.stop()
    bridge.start(wait_ready=False)
    time.sleep(2)
    assert bridge.process.poll() is None
    journald.start()
    bridge.wait_ready()
    c = containers.run("echo late")
    assert journald.wait_messages(c.id, 1) == [b"late"]
    assert "waiting for journal socket" in bridge.log()


def test_opt_in_mode_forwards_only_labelled_containers(bridge, journald, containers):
    bridge.configure(filter={"opt_in": True})
    bridge.start()
    plain = containers.run("echo plain")
    chosen = containers.run("echo chosen", labels={"journald-bridge.enable": "true"})
    assert journald.wait_messages(chosen.id, 1) == [b"chosen"]
    plain.wait(timeout=30)
    time.sleep(1)
    assert journald.messages(plain.id) == []
