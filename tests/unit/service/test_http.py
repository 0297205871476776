"""The status server over real loopback sockets: endpoints, bounds, timeouts, IPv6, TLS, auth."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.config import MetricsConfig
from bridge.service.http import Limits, StatusServer, tls_context

UNIT = Path(__file__).parents[3] / "deploy" / "journald-bridge.service"


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("journald_bridge_test", "A test counter.", registry=reg).inc()
    return reg


@contextlib.contextmanager
def serving(
    address: tuple[str, int] = ("127.0.0.1", 0), readiness=lambda: None, reg=None, **kwargs
) -> Iterator[StatusServer]:
    server = StatusServer(address, reg or registry(), readiness, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def started(server: StatusServer) -> Iterator[StatusServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(port, path="/metrics", headers=None, host="127.0.0.1", tls=None, method="GET"):
    """(status, headers with lower-case names, body)."""
    if tls is None:
        conn = http.client.HTTPConnection(host, port, timeout=5)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=5, context=tls)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def read_to_end(sock: socket.socket) -> bytes:
    """Everything until the server closes; a reset ends it too."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return read_to_end(sock)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- endpoints ------------------------------------------------------------------------------


def test_endpoints_and_openmetrics_negotiation():
    with serving(readiness=lambda: "not connected to dockerd") as server:
        status, headers, body = get(server.port)
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert b"journald_bridge_test_total 1.0" in body
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
        status, headers, body = get(server.port, "/metrics?x=1", accept)
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        assert get(server.port, "/healthz")[::2] == (200, b"ok\n")
        assert get(server.port, "/readyz")[::2] == (503, b"not ready: not connected to dockerd\n")
        assert get(server.port, "/nope")[::2] == (404, b"not found\n")
        assert headers["connection"] == "close"
    with serving() as server:
        assert get(server.port, "/readyz")[::2] == (200, b"ready\n")


def test_only_get_and_head_and_bad_heads_are_refused():
    with serving() as server:
        reply = exchange(server.port, b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
        assert reply.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: GET, HEAD\r\n" in reply
        status, headers, body = get(server.port, method="HEAD")
        assert status == 200 and int(headers["content-length"]) > 0 and body == b""
        assert exchange(server.port, b"GET /healthz HTTP/1.0\n\n").endswith(b"\r\n\r\nok\n")
        for bad in (
            b"GARBAGE\r\n\r\n",
            b"GET /metrics HTTP/9\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        ):
            assert exchange(server.port, bad).startswith(b"HTTP/1.1 400 "), bad
        huge = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
        assert exchange(server.port, huge).startswith(b"HTTP/1.1 431 ")
        assert get(server.port)[0] == 200


# --- bounds and timeouts --------------------------------------------------------------------


def test_500_half_open_connections_take_no_threads_or_descriptors_and_scrapes_go_on():
    with serving() as server, contextlib.ExitStack() as clients:
        threads, fds = threading.active_count(), open_fds()
        for i in range(500):
            sock = clients.enter_context(socket.create_connection(("127.0.0.1", server.port)))
            if i % 2:
                sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # half a head; the rest say nothing
        began = time.monotonic()
        status, _, body = get(server.port)  # accepted after all 500: the server has seen them
        took = time.monotonic() - began
        assert status == 200 and b"journald_bridge_test_total" in body
        assert took < 1.0, f"scrape took {took:.2f} s"
        assert threading.active_count() == threads
        assert open_fds() - fds - 500 <= Limits().max_connections


def test_stalled_clients_are_reset_at_the_head_deadline():
    with serving(limits=Limits(head_timeout=0.5)) as server, contextlib.ExitStack() as clients:
        silent = clients.enter_context(socket.create_connection(("127.0.0.1", server.port), 5))
        half = clients.enter_context(socket.create_connection(("127.0.0.1", server.port), 5))
        half.sendall(b"GET /metrics HTTP/1.1\r\nAccept: text/pl")
        began = time.monotonic()
        assert read_to_end(silent) == b"" and read_to_end(half) == b""
        assert 0.3 < time.monotonic() - began < 3


def test_at_the_cap_a_new_connection_evicts_the_oldest_unfinished_one():
    with serving(limits=Limits(max_connections=4)) as server, contextlib.ExitStack() as clients:
        idle = [
            clients.enter_context(socket.create_connection(("127.0.0.1", server.port), 5))
            for _ in range(4)
        ]
        assert get(server.port, "/healthz")[0] == 200  # the fifth: room made by evicting idle[0]
        assert read_to_end(idle[0]) == b""
        for sock in idle[1:]:
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                sock.recv(1)


class Huge(Collector):
    """A 16 MiB exposition: more than the kernel buffers on both ends of a loopback connection."""

    def collect(self):
        yield GaugeMetricFamily("journald_bridge_huge", "x" * (16 << 20), value=1)


def huge_registry() -> CollectorRegistry:
    reg = registry()
    reg.register(Huge())
    return reg


def test_a_client_that_does_not_read_its_reply_holds_no_worker_and_is_cut_off():
    # One worker: were it the one writing, /healthz would wait for the lazy client's deadline.
    limits = Limits(workers=1, reply_timeout=1.0)
    with serving(reg=huge_registry(), limits=limits) as server, socket.socket() as lazy:
        lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lazy.settimeout(5)
        lazy.connect(("127.0.0.1", server.port))
        lazy.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        time.sleep(0.2)  # rendered, and stuck in the kernel's buffers
        began = time.monotonic()
        assert get(server.port, "/healthz")[0] == 200
        assert time.monotonic() - began < 0.8
        time.sleep(1.0)
        assert 0 < len(read_to_end(lazy)) < 16 << 20  # reset at the reply deadline


def test_stop_is_prompt_and_closes_every_descriptor():
    threads, fds = threading.active_count(), open_fds()
    server = StatusServer(("127.0.0.1", 0), registry(), lambda: None)
    with started(server), contextlib.ExitStack() as clients:
        for data in (b"", b"GET /met", b"GET /metrics HTTP/1.1\r\n"):
            sock = clients.enter_context(socket.create_connection(("127.0.0.1", server.port)))
            sock.sendall(data)
        assert get(server.port, "/healthz")[0] == 200
        began = time.monotonic()
        server.stop()
        assert time.monotonic() - began < 1.0
        assert open_fds() == fds + 3  # the clients' own ends only
    assert threading.active_count() == threads and open_fds() == fds
    StatusServer(("127.0.0.1", 0), registry(), lambda: None).stop()  # never started: no leak


def test_the_unit_file_leaves_descriptors_for_2000_streams_and_the_status_server():
    nofile = re.search(r"^LimitNOFILE=(\d+)$", UNIT.read_text(), re.MULTILINE)
    assert nofile is not None, "LimitNOFILE= is missing: systemd's default soft limit is 1024"
    assert int(nofile[1]) >= 2000 + Limits().max_connections + 4 + 1000  # margin: docker, journal


# --- IPv6 -----------------------------------------------------------------------------------


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_serves_on_ipv6_loopback_from_the_config():
    config = MetricsConfig(listen="[::1]:0")
    with started(StatusServer.from_config(config, registry(), lambda: None)) as server:
        assert get(server.port, "/healthz", host="::1")[::2] == (200, b"ok\n")


# --- TLS and basic auth ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = str(where / "cert.pem"), str(where / "key.pem")
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"]  # fmt: skip
    subprocess.run([*openssl, "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def trusting(cert: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cert)
    context.check_hostname = False  # CN=localhost, reached at 127.0.0.1; the chain is verified
    return context


def test_tls_serves_https_and_a_stalled_handshake_holds_nothing(cert):
    tls = tls_context(*cert)
    limits = Limits(workers=1, head_timeout=1.0)  # one worker, that no handshake may hold
    server = StatusServer(("127.0.0.1", 0), registry(), lambda: None, tls=tls, limits=limits)
    with started(server), contextlib.ExitStack() as clients:
        stalled = []
        for data in (b"", b"", b"\x16\x03\x01\x02\x00\x01\x00"):  # nothing; half a ClientHello
            sock = clients.enter_context(socket.create_connection(("127.0.0.1", server.port), 5))
            sock.sendall(data)
            stalled.append(sock)
        began = time.monotonic()
        status, _, body = get(server.port, tls=trusting(cert[0]))
        assert status == 200 and b"journald_bridge_test_total" in body
        assert time.monotonic() - began < 0.8
        assert all(read_to_end(sock) == b"" for sock in stalled)  # reset at the head deadline
        assert not exchange(server.port, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP")
        assert get(server.port, "/healthz", tls=trusting(cert[0]))[0] == 200


def test_basic_auth_guards_all_but_healthz(tmp_path):
    (tmp_path / "password").write_text("s3cret\n")
    config = MetricsConfig(
        listen="127.0.0.1:0",
        basic_auth_user="prom",
        basic_auth_password_file=str(tmp_path / "password"),
    )
    with started(StatusServer.from_config(config, registry(), lambda: None)) as server:
        status, headers, _ = get(server.port)
        assert status == 401 and headers["www-authenticate"].startswith('Basic realm="')
        for wrong in (
            basic("prom", "s3cret\n"),
            basic("prom", "s3cre"),
            basic("Prom", "s3cret"),
            {"Authorization": "Basic !!!"},
            {"Authorization": "Bearer s3cret"},
            {"Authorization": basic("prom", "s3cret")["Authorization"].replace("Basic", "Digest")},
        ):
            assert get(server.port, "/metrics", wrong)[0] == 401, wrong
            assert get(server.port, "/readyz", wrong)[0] == 401, wrong
        assert get(server.port, "/metrics", basic("prom", "s3cret"))[0] == 200
        assert get(server.port, "/readyz", basic("prom", "s3cret"))[::2] == (200, b"ready\n")
        assert get(server.port, "/healthz")[::2] == (200, b"ok\n")
        assert get(server.port, "/metrics", method="HEAD")[::2] == (401, b"")


def test_tls_and_basic_auth_together(cert, tmp_path):
    (tmp_path / "password").write_text("pw")
    config = MetricsConfig(
        listen="127.0.0.1:0",
        tls_cert_file=cert[0],
        tls_key_file=cert[1],
        basic_auth_user="prom",
        basic_auth_password_file=str(tmp_path / "password"),
    )
    assert config.url == "https://127.0.0.1:0/metrics"
    with started(StatusServer.from_config(config, huge_registry(), lambda: None)) as server:
        tls = trusting(cert[0])
        assert get(server.port, tls=tls)[0] == 401
        status, _, body = get(server.port, headers=basic("prom", "pw"), tls=tls)
        assert status == 200 and len(body) > 16 << 20  # whole, through partial TLS writes
