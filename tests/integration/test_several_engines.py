"""Several engines per bridge, on the real dockerd, Podman and journald.

Podman is Debian's 4.3.1 behind `podman system service` (scripts/setup-test.sh starts it); the
remote engine is a second dockerd of its own (data-root, exec-root, containerd) listening on
127.0.0.1 with TLS certificates this module makes with openssl.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.tls
import pytest

from tests.integration.conftest import (
    Containers,
    expected_keys,
    free_port,
    wait_until,
    writer_script,
)
from tests.integration.test_exactly_once_across_restarts import wait_complete

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PODMAN_SOCKET = "/run/podman/podman.sock"
PODMAN_IMAGE = "localhost/bridge-test/busybox:latest"
PODMAN = {"name": "podman", "host": f"unix://{PODMAN_SOCKET}"}


@pytest.fixture
def podman(label: str) -> Iterator[Containers]:
    client = docker.DockerClient(base_url=f"unix://{PODMAN_SOCKET}", version="1.41", timeout=120)
    instance = Containers(client, label, image=PODMAN_IMAGE)
    yield instance
    instance.cleanup()
    client.close()


def podman_service(action: str) -> None:
    """Stops the Podman API service (containers keep running under conmon) or starts it."""
    if action == "stop":
        subprocess.run(["pkill", "-f", "podman system service"], check=False)
        wait_until(lambda: not _answers(PODMAN_SOCKET), 30, "podman's API service to stop")
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(PODMAN_SOCKET)
    # setsid -f: the service outlives this test, as scripts/setup-test.sh starts it; from /,
    # since a service whose working directory is deleted (a clone made for a run) fails every
    # container start
    subprocess.run(
        ["setsid", "-f", "podman", "system", "service", "--time=0", f"unix://{PODMAN_SOCKET}"],
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    wait_until(lambda: _answers(PODMAN_SOCKET), 30, "podman's API service to answer")


def _answers(socket_path: str) -> bool:
    """GET /_ping on the socket (by hand: docker-py leaks the socket of a failed connect)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(socket_path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            head = sock.recv(64)
            return head.startswith(b"HTTP/1.") and b" 200 " in head
        except OSError:
            return False


def entry_fields(entry: dict[str, Any]) -> dict[str, bytes]:
    keys = ("CONTAINER_NAME", "CONTAINER_ENGINE", "CONTAINER_STREAM", "PRIORITY", "IMAGE_NAME")
    return {k: entry[k] for k in keys if k in entry}


def test_docker_and_podman_in_one_bridge(bridge, journald, containers, podman):
    bridge.configure(engines=[PODMAN])
    bridge.start()
    script = "echo out-$HOSTNAME; echo err-$HOSTNAME >&2; sleep 1"
    d = containers.run(script, name=f"d-{bridge.port}")
    p = podman.run(script, name=f"p-{bridge.port}")
    for c, engine, image in ((d, b"docker", b"bridge-test/busybox:latest"), (p, b"podman", None)):
        entries = wait_until(
            lambda c=c: (e := journald.entries(CONTAINER_ID_FULL=c.id)) and len(e) >= 2 and e,
            60,
            f"both lines of {c.name}",
        )
        got = sorted((entry_fields(e) for e in entries), key=lambda f: f["CONTAINER_STREAM"])
        assert [f["CONTAINER_STREAM"] for f in got] == [b"stderr", b"stdout"]
        assert {f["CONTAINER_ENGINE"] for f in got} == {engine}
        assert {f["CONTAINER_NAME"] for f in got} == {c.name.encode()}
        assert [f["PRIORITY"] for f in got] == [b"3", b"6"]
        if image is not None:
            assert {f["IMAGE_NAME"] for f in got} == {image}
    assert bridge.metric("journald_bridge_engine_up", engine="podman") == 1
    assert bridge.metric("journald_bridge_engine_up", engine="docker") == 1


def test_an_engine_filter_applies_to_that_engine_only(bridge, journald, containers, podman):
    test_only = bridge.settings["filter"]["include_labels"]
    own = {"include_labels": test_only, "exclude_names": ["skip-*"]}
    bridge.configure(engines=[{**PODMAN, "filter": own}])
    bridge.start()
    script = "echo line-$HOSTNAME; sleep 1"
    skipped = podman.run(script, name=f"skip-p{bridge.port}")
    kept = podman.run(script, name=f"keep-p{bridge.port}")
    on_docker = containers.run(script, name=f"skip-d{bridge.port}")  # [filter] applies there
    for c in (kept, on_docker):
        assert len(journald.wait_messages(c.id, 1)) == 1
    skipped.wait(timeout=60)
    time.sleep(1)
    assert journald.messages(skipped.id) == []


@pytest.mark.engines("podman:files", "podman5:files", "podman5rootless", only=True)
def test_podman_20000_lines_and_a_kill_9_each_line_once(bridge, journald, containers, each_source):
    # Podman's API stamps whole seconds: thousands of lines share one, and only their order
    # within the second (the k of a position) tells them apart after the restart.
    bridge.start()
    lines = 20_000
    c = containers.run(writer_script("pk", lines, pace_every=1000, pace="0.2"))
    wait_until(lambda: len(journald.messages(c.id)) > lines // 4, 120, "a quarter of the lines")
    bridge.kill9()
    time.sleep(0.5)
    bridge.start()
    c.wait(timeout=300)
    wait_complete(journald, c, expected_keys("pk", lines))


@pytest.mark.engines("podman", "podman5", "podman5rootless", only=True)
def test_a_podman_rm_container_that_exits_at_once(bridge, journald, containers):
    bridge.start()
    name = f"prm-{bridge.port}"
    containers.run("echo gone-at-once", name=name, auto_remove=True)
    entries = wait_until(
        lambda: [e for e in journald.entries(CONTAINER_NAME=name)] or None, 60, "the line"
    )
    assert [e["MESSAGE"] for e in entries] == [b"gone-at-once"]
    assert f"reading its log file {containers.client.info()['DockerRootDir']}/" in bridge.log()


def test_podman_service_restart_while_docker_flows(bridge, journald, containers, podman):
    bridge.configure(engines=[PODMAN])
    bridge.start()
    lines = 6000
    d = containers.run(writer_script("dk", lines, pace_every=200, pace="0.1"))
    p = podman.run(writer_script("pd", lines, pace_every=200, pace="0.1"))
    time.sleep(1)
    podman_service("stop")
    try:
        wait_until(
            lambda: bridge.metric("journald_bridge_engine_up", engine="podman") == 0,
            30,
            "podman to be seen down",
        )
        status, body = bridge.get("/readyz")
        assert status == 503 and "podman" in body and "docker" not in body.split(":", 1)[1]
        before = len(journald.messages(d.id))
        time.sleep(2)
        assert len(journald.messages(d.id)) > before  # docker keeps flowing meanwhile
    finally:
        podman_service("start")
    wait_until(lambda: bridge.get("/readyz")[0] == 200, 60, "podman back up")
    d.wait(timeout=300)
    wait_complete(journald, d, expected_keys("dk", lines))
    wait_until(lambda: p.reload() or p.status == "exited", 300, "the podman writer to end")
    wait_complete(journald, p, expected_keys("pd", lines))
    assert bridge.metric("journald_bridge_engine_reconnects_total", engine="podman") >= 1


# --- a remote dockerd over TLS ------------------------------------------------------------


class RemoteDockerd:
    """A second dockerd with its own roots and containerd, on 127.0.0.1 over TLS only."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.host = f"tcp://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def make_certificates(self) -> None:
        d = self.dir

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

        for who in ("ca", "wrong-ca"):
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={who}", "-keyout", f"{who}-key.pem", "-out", f"{who}.pem")  # fmt: skip
        (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        for who in ("server", "client"):
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
                    "-keyout", f"{who}-key.pem", "-out", f"{who}.csr")  # fmt: skip
            openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                    "-CAcreateserial", "-days", "2", "-extfile", f"{who}.ext",
                    "-out", f"{who}.pem")  # fmt: skip

    def start(self) -> None:
        d = self.dir
        self.make_certificates()
        log = open(d / "dockerd.log", "ab")  # noqa: SIM115 -- handed to the child
        self.process = subprocess.Popen(
            ["dockerd", "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
             "--pidfile", str(d / "dockerd.pid"), "-H", self.host, "--tlsverify",
             "--tlscacert", str(d / "ca.pem"), "--tlscert", str(d / "server.pem"),
             "--tlskey", str(d / "server-key.pem"), "--iptables=false", "--bridge=none",
             "--ip-masq=false", "--containerd-namespace", "jb-remote",
             "--containerd-plugins-namespace", "jb-remote-plugins"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_until(self._answers, 60, "the remote dockerd")
        with self.client() as client:
            image = docker.from_env(version="1.41").images.get("bridge-test/busybox:latest")
            client.images.load(b"".join(image.save(named=True)))

    def _answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except Exception:
            return False

    @contextlib.contextmanager
    def client(self) -> Iterator[docker.DockerClient]:
        d = self.dir
        tls = docker.tls.TLSConfig(
            client_cert=(str(d / "client.pem"), str(d / "client-key.pem")),
            ca_cert=str(d / "ca.pem"),
            verify=str(d / "ca.pem"),
        )
        client = docker.DockerClient(base_url=self.host, tls=tls, version="1.41", timeout=60)
        client.api.trust_env = False  # else REQUESTS_CA_BUNDLE wins over ca.pem (requests#3829)
        try:
            yield client
        finally:
            client.close()

    def engine(self, name: str, ca: str = "ca.pem") -> dict[str, Any]:
        d = self.dir
        return {
            "name": name,
            "host": self.host,
            "tls_ca_file": str(d / ca),
            "tls_cert_file": str(d / "client.pem"),
            "tls_key_file": str(d / "client-key.pem"),
        }

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(docker.errors.APIError, OSError), self.client() as client:
                for c in client.containers.list(all=True):
                    c.remove(force=True)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
        subprocess.run(["umount", "-R", str(self.dir / "exec")], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def remote() -> Iterator[RemoteDockerd]:
    instance = RemoteDockerd(Path(tempfile.mkdtemp(prefix="jb-remote-")))
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def test_a_remote_engine_over_tls_and_a_wrong_ca(bridge, journald, containers, remote, label):
    bridge.configure(engines=[remote.engine("edge"), remote.engine("bad", ca="wrong-ca.pem")])
    bridge.start(wait_ready=False)  # never ready: `bad` stays down
    for engine in ("docker", "edge"):
        wait_until(
            lambda e=engine: bridge.metric("journald_bridge_engine_up", engine=e) == 1,
            60,
            f"engine {engine} up",
        )
    local = containers.run("echo local-line; sleep 1")
    with remote.client() as client:
        far = Containers(client, label).run("echo remote-line; sleep 1")
        try:
            entries = journald.wait_for_line(far.id, b"remote-line")
        finally:
            with contextlib.suppress(docker.errors.APIError):
                far.remove(force=True)
    (entry,) = entries
    assert entry["CONTAINER_ENGINE"] == b"edge"
    assert entry["CONTAINER_ENGINE_HOST"] == client_host_name(remote)
    journald.wait_for_line(local.id, b"local-line")  # the other engines keep running
    status, body = bridge.get("/readyz")
    assert status == 503 and body.count("bad (") == 1 and "edge" not in body
    errors = [line for line in bridge.log().splitlines() if "engine bad: cannot connect" in line]
    assert len(errors) == 1 and "CERTIFICATE_VERIFY_FAILED" in errors[0], errors


def client_host_name(remote: RemoteDockerd) -> bytes:
    with remote.client() as client:
        return str(client.info()["Name"]).encode()


@pytest.mark.engines("podman:api", "podman5:api", only=True)
def test_podman_rm_containers_read_through_the_api_end_without_a_stream_error(
    bridge, journald, containers, each_source
):
    # Podman answers a logs request for a container being removed with `200 OK` and its JSON
    # error as the body: the reader must take it for the removal it reports.
    bridge.start()
    started = [
        containers.run("echo gone-at-once", name=f"prm{i}-{bridge.port}", auto_remove=True)
        for i in range(20)
    ]
    wait_until(
        lambda: (
            bridge.metric("journald_bridge_containers_attached") == 0
            and bridge.metric("journald_bridge_container_detach_total") >= len(started)
        ),
        60,
        "every reader to end",
    )
    log = "\n".join(line for line in bridge.log().splitlines() if " DEBUG " not in line)
    assert "bad frame header" not in log and "EngineErrorBody" not in log, log
