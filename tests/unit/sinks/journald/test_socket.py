from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from bridge.sinks.journald.socket import JournalSocket
from bridge.telemetry import Telemetry


@pytest.fixture
def server(tmp_path):
    path = str(tmp_path / "socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path, sock
    sock.close()


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def make():
    made = []

    def factory(path, send_buffer=1 << 20):
        registry = CollectorRegistry()
        journal = JournalSocket(path, send_buffer, Telemetry(registry))
        made.append(journal)
        return journal, registry

    yield factory
    for journal in made:
        journal.close()


def receive(sock):
    data, fds, _, _ = socket.recv_fds(sock, 1 << 22, 1)
    if fds:
        with os.fdopen(fds[0], "rb") as f:
            return os.pread(f.fileno(), 1 << 22, 0)  # journald maps it from offset 0
    return data


def test_small_and_memfd_entries_arrive_whole(server, make):
    path, srv = server
    journal, registry = make(path, send_buffer=65536)
    journal.connect()
    assert journal.send(b"MESSAGE=small\n", lambda: True)
    big = b"MESSAGE\n" + (200_000).to_bytes(8, "little") + b"x" * 200_000 + b"\n"
    assert journal.send(big, lambda: True)
    assert receive(srv) == b"MESSAGE=small\n"
    assert receive(srv) == big
    assert value(registry, "journald_bridge_journal_memfd_sends_total") == 1


def test_a_full_queue_is_backpressure_not_loss(server, make):
    path, srv = server
    journal, registry = make(path)
    journal.connect()
    sent = 0
    while True:  # fill the receive queue
        try:
            journal._sock.send(b"MESSAGE=fill\n")
            sent += 1
        except BlockingIOError:
            break
    drained = []

    def drain_later():
        time.sleep(0.5)
        srv.setblocking(False)
        try:
            while True:
                drained.append(srv.recv(100))
        except BlockingIOError:
            pass

    thread = threading.Thread(target=drain_later)
    thread.start()
    assert journal.send(b"MESSAGE=last\n", lambda: True)
    thread.join()
    assert value(registry, "journald_bridge_journal_backpressure_seconds_total") >= 0.3
    srv.setblocking(True)
    assert len(drained) + 1 >= sent


def test_a_missing_socket_is_waited_for_and_reported_once(tmp_path, make, caplog):
    path = str(tmp_path / "later")
    journal, registry = make(path)
    calls = []

    def keep_waiting():
        calls.append(1)
        if len(calls) == 3:
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            srv.bind(path)
            keep_waiting.srv = srv
        return len(calls) < 50

    assert journal.send(b"MESSAGE=x\n", keep_waiting)
    assert keep_waiting.srv.recv(100) == b"MESSAGE=x\n"
    keep_waiting.srv.close()
    assert caplog.text.count("unavailable") == 1
    assert "is back" in caplog.text
    assert value(registry, "journald_bridge_journal_up") == 1


def test_giving_up_returns_false(tmp_path, make):
    journal, _ = make(str(tmp_path / "never"))
    assert journal.send(b"MESSAGE=x\n", lambda: False) is False


def test_batches_arrive_in_order_through_backpressure(server, make):
    path, srv = server
    journal, _ = make(path)
    journal.connect()
    datagrams = [b"MESSAGE=%d\n" % i for i in range(3000)]
    received = []

    def drain():
        while len(received) < len(datagrams):
            received.append(srv.recv(100))

    thread = threading.Thread(target=drain)
    thread.start()
    assert journal.send_batch(datagrams, lambda: True) == (3000, [])
    thread.join(10)
    assert received == datagrams


@pytest.fixture
def sendmmsg_client(server):
    """A client socket connected to the test server, where sendmmsg is available."""
    from bridge.sinks.journald import sendmmsg

    if not sendmmsg.AVAILABLE:
        pytest.skip("no sendmmsg here")
    path, srv = server
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    client.connect(path)
    yield client, srv
    client.close()


def test_a_packed_run_is_sent_from_where_the_last_call_stopped(sendmmsg_client):
    from bridge.sinks.journald.sendmmsg import PackedDatagrams

    client, srv = sendmmsg_client
    datagrams = [b"MESSAGE=%d\n" % i for i in range(10)]
    with PackedDatagrams(datagrams) as packed:
        assert packed.send(client.fileno(), 7) == 3
        assert packed.send(client.fileno(), 0) == 10
    received = [srv.recv(100) for _ in range(13)]
    assert received == datagrams[7:] + datagrams


def test_packed_runs_share_arrays_only_once_released(sendmmsg_client):
    from bridge.sinks.journald.sendmmsg import PackedDatagrams

    client, srv = sendmmsg_client
    first = PackedDatagrams([b"MESSAGE=first\n"])
    second = PackedDatagrams([b"MESSAGE=second\n"])  # first still holds its arrays
    assert second.send(client.fileno(), 0) == 1
    assert first.send(client.fileno(), 0) == 1
    with first:
        pass
    with PackedDatagrams([b"MESSAGE=third\n", b"MESSAGE=fourth\n"]) as third:
        assert third.send(client.fileno(), 0) == 2  # on first's arrays, now released
    received = [srv.recv(100) for _ in range(4)]
    assert received == [b"MESSAGE=%s\n" % w for w in (b"second", b"first", b"third", b"fourth")]


def test_a_run_longer_than_the_arrays_is_refused(sendmmsg_client):
    from bridge.sinks.journald.sendmmsg import MAX_RUN, PackedDatagrams

    with pytest.raises(ValueError, match="at most"):
        PackedDatagrams([b"MESSAGE=x\n"] * (MAX_RUN + 1))


def test_the_refill_pause_follows_the_queue_length(tmp_path):
    from bridge.sinks.journald.socket import _refill_pause

    sysctl = tmp_path / "max_dgram_qlen"
    sysctl.write_text("512\n")
    assert _refill_pause(str(sysctl)) == pytest.approx(512 * 3e-6)
    sysctl.write_text("10\n")
    assert _refill_pause(str(sysctl)) == pytest.approx(0.00003)
    assert _refill_pause(str(tmp_path / "missing")) == pytest.approx(0.00003)
    sysctl.write_text("100000\n")
    assert _refill_pause(str(sysctl)) == 0.002


def test_journal_up_is_zero_while_the_socket_is_missing(tmp_path, make):
    path = str(tmp_path / "socket")
    journal, registry = make(path)
    with pytest.raises(OSError):
        journal.connect()  # start-up waits for the socket, retrying this
    assert value(registry, "journald_bridge_journal_up") == 0
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    try:
        journal.connect()
        assert value(registry, "journald_bridge_journal_up") == 1
    finally:
        srv.close()
