"""Integration fixtures on the real services: dockerd and systemd-journald.

Every test gets its own journald *namespace* instance (a real systemd-journald, listening on
/run/systemd/journal.NS/socket, rate limiting off), so tests can stop, freeze and restart "the
journal" without touching the host's, and read back exactly what the bridge wrote. Test
containers carry a label that the test bridge's include filter selects, so leftovers of other
tests are never forwarded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from _pytest.runner import runtestprotocol
from docker.transport.unixconn import UnixHTTPConnection
from systemd import journal

from tests.integration import dockerd
from tests.integration.engines import ENGINES, Engine, contained_engines, engine

__all__ = ["contained_engines", "engine"]  # fixtures, defined beside the engines they start

pytestmark = pytest.mark.integration

IMAGE = "bridge-test/busybox:latest"


def _connect_closing_on_failure(self: UnixHTTPConnection) -> None:
    """docker-py's connect, closing the socket when the connect fails.

    docker-py leaves that socket to the garbage collector: a dockerd or Podman service that is
    restarting, or whose accept queue is full under a test's load, then made a ResourceWarning
    at some later moment, which `filterwarnings = error` turned into the failure of whichever
    test was running. (The bridge's clients never warn: ResourceWarning is ignored outside
    tests, and its engine client looks for the socket before connecting.)
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(self.timeout)
        sock.connect(self.unix_socket)
    except BaseException:
        sock.close()
        raise
    self.sock = sock


UnixHTTPConnection.connect = _connect_closing_on_failure  # type: ignore[method-assign]
BRIDGE = str(Path(sys.executable).parent / "journald-bridge")
TEST_LABEL = "journald-bridge-test"


def _toml(value: Any) -> str:
    """A TOML value: JSON's strings, numbers, booleans and lists are TOML's; a dict is an
    inline table."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raw(value: Any) -> Any:
    """Undoes python-systemd's conversions of the fields the tests compare as bytes."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return str(value).encode()
    return value


class Journald:
    """A real systemd-journald serving one namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.socket = f"/run/systemd/journal.{namespace}/socket"
        self.conf = Path(f"/etc/systemd/journald@{namespace}.conf")
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text("[Journal]\nRateLimitBurst=0\nStorage=volatile\nRuntimeMaxUse=2G\n")
        self.process: subprocess.Popen[bytes] | None = None
        self._keepalive: socket.socket | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["/lib/systemd/systemd-journald", self.namespace],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: os.path.exists(self.socket), 10, "journald's socket")
        # A namespace instance exits after 30 s without clients (it expects socket activation);
        # an open stdout stream keeps it serving for the whole test.
        self._keepalive = wait_until(self._connect_stdout, 10, "journald's stdout socket")
        self._keepalive.sendall(b"journald-bridge-tests\n\n6\n0\n0\n0\n0\n")

    def _connect_stdout(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.path.join(os.path.dirname(self.socket), "stdout"))
        except OSError:
            sock.close()
            return None
        return sock

    def stop(self) -> None:
        if self._keepalive is not None:
            self._keepalive.close()
            self._keepalive = None
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
        self.stop()
        self.conf.unlink(missing_ok=True)
        for base in ("/run/log/journal", "/var/log/journal"):
            for path in Path(base).glob(f"*.{self.namespace}"):
                shutil.rmtree(path, ignore_errors=True)

    def entries(self, **matches: str) -> list[dict[str, Any]]:
        reader = journal.Reader(namespace=self.namespace)
        try:
            for key, value in matches.items():
                reader.add_match(**{key: value})
            return [{k: _raw(v) for k, v in e.items()} for e in reader if "CONTAINER_ID_FULL" in e]
        finally:
            reader.close()

    def messages(self, container_id: str) -> list[bytes]:
        return [e["MESSAGE"] for e in self.entries(CONTAINER_ID_FULL=container_id)]

    def wait_for_line(
        self, container_id: str, message: bytes, timeout: float = 60
    ) -> list[dict[str, Any]]:
        """All entries of the container, once one of them is `message`."""

        def check() -> list[dict[str, Any]] | None:
            entries = self.entries(CONTAINER_ID_FULL=container_id)
            return entries if any(e["MESSAGE"] == message for e in entries) else None

        return wait_until(
            check, timeout, f"{message!r} from container {container_id[:12]}", interval=0.25
        )

    def wait_messages(self, container_id: str, count: int, timeout: float = 60) -> list[bytes]:
        return wait_until(
            lambda: (m := self.messages(container_id)) and len(m) >= count and m,
            timeout,
            f"{count} entries of container {container_id[:12]}",
            interval=0.25,
        )


class Bridge:
    """journald-bridge as a real process, configured for one test."""

    def __init__(self, workdir: Path, journald: Journald, label: str) -> None:
        self.workdir = workdir
        self.journald = journald
        self.port = free_port()
        self.config_path = workdir / "bridge.toml"
        self.state_dir = workdir / "state"
        self.log_path = workdir / "bridge.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.settings: dict[str, Any] = {
            "journal": {"socket": journald.socket, "namespace": journald.namespace},
            "state": {"directory": str(self.state_dir), "flush_interval_seconds": 0.5},
            "filter": {"include_labels": [f"{TEST_LABEL}={label}"]},
            "metrics": {"listen": f"127.0.0.1:{self.port}"},
            "log": {"level": "debug"},
        }

    def configure(self, **sections: Any) -> None:
        """Merges keys into [section]s; a list (`engines=[{...}]`) replaces [[section]]s."""
        for section, values in sections.items():
            if isinstance(values, list):
                self.settings[section] = values
            else:
                self.settings.setdefault(section, {}).update(values)

    def write_config(self) -> None:
        lines = []
        for section, values in self.settings.items():
            tables = values if isinstance(values, list) else [values]  # [[engines]]
            for table in tables:
                lines.append(f"[[{section}]]" if isinstance(values, list) else f"[{section}]")
                lines.extend(f"{key} = {_toml(value)}" for key, value in table.items())
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, wait_ready: bool = True) -> None:
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 -- handed to the child
        self.process = subprocess.Popen(
            [BRIDGE, "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        if wait_ready:
            self.wait_ready()
        else:
            # Even unready, a started bridge has its stop handler: a SIGTERM sent sooner meets
            # the interpreter's start-up, which no program can handle (systemd counts that
            # death by SIGTERM as a clean stop).
            wait_until(self.handles_sigterm, 30, "the bridge to handle SIGTERM")

    def handles_sigterm(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the bridge exited with {self.process.returncode}:\n{self.log()}")
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(lambda: self.get("/readyz")[0] == 200, timeout, "the bridge to be ready")

    def get(self, path: str) -> tuple[int, str]:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the bridge exited with {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        _, text = self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "positions.json").read_text())


MAX_DOCKERD_RECOVERIES = 2
_RECOVERIES = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """Runs an integration test once more when it failed because dockerd hung (see dockerd.py).

    Only a failure after which dockerd cannot run a container counts; any other failure stands.
    """
    if item.get_closest_marker("integration") is None:
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    if any(r.failed for r in reports) and not dockerd.healthy():
        recoveries = item.session.stash.get(_RECOVERIES, 0) + 1
        item.session.stash[_RECOVERIES] = recoveries
        if recoveries > MAX_DOCKERD_RECOVERIES:  # a broken host, not a passing hang: say so now
            pytest.exit(f"dockerd hung {recoveries} times; stopping at {item.nodeid}", returncode=1)
        try:
            found = dockerd.recover()
        except Exception as exc:  # whatever the reason, there is no dockerd to test on
            pytest.exit(f"dockerd hung during {item.nodeid} and did not restart: {exc}", 1)
        reporter = item.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"\n{item.nodeid}: dockerd stopped running containers during the test; "
                f"{found}; dockerd restarted and the test run again"
            )
        item._initrequest()  # type: ignore[attr-defined]  # fresh fixtures for the second run
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report carries the end of its bridge's log: CI keeps nothing else."""
    outcome = yield
    report = outcome.get_result()
    instance = getattr(item, "funcargs", {}).get("bridge")
    if report.failed and call.when == "call" and isinstance(instance, Bridge):
        tail = "\n".join(instance.log().splitlines()[-40:])
        report.sections.append(("bridge log, last lines", tail))


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(version="1.41", timeout=60, max_pool_size=64)
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"dockerd is not reachable ({exc}); run `make setup` first")
    yield client
    client.close()


@pytest.fixture
def label() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def journald() -> Iterator[Journald]:
    instance = Journald(f"jbt{uuid.uuid4().hex[:8]}")
    instance.start()
    yield instance
    instance.cleanup()


@pytest.fixture
def bridge(tmp_path: Path, journald: Journald, label: str) -> Iterator[Bridge]:
    instance = Bridge(tmp_path, journald, label)
    yield instance
    if instance.process is not None:
        try:
            instance.stop(timeout=30)
        except subprocess.TimeoutExpired:
            instance.kill9()


class Containers:
    """Starts labelled test containers and removes them afterwards."""

    def __init__(self, client: docker.DockerClient, label: str, image: str = IMAGE) -> None:
        self.client = client
        self.label = label
        self.image = image

    def run(
        self, script: str, *, name: str | None = None, detach: bool = True, **kwargs: Any
    ) -> Any:
        labels = {TEST_LABEL: self.label, **kwargs.pop("labels", {})}
        return self.client.containers.run(
            self.image,
            ["sh", "-c", script],
            name=name,
            detach=detach,
            labels=labels,
            # No network at all, not the "none" network: dockerd 20.10 can deadlock in libnetwork
            # when many containers leave a network at once (see dockerd.py)
            network_disabled=True,
            network_mode="none",
            **kwargs,
        )

    def wait_exit(self, container: Any, timeout: float = 120) -> None:
        container.wait(timeout=timeout)

    def cleanup(self) -> None:
        try:
            for c in self.client.containers.list(
                all=True, filters={"label": f"{TEST_LABEL}={self.label}"}
            ):
                with contextlib.suppress(docker.errors.APIError):
                    c.remove(force=True)
        except requests.exceptions.RequestException as exc:
            # dockerd stopped answering: one timeout says so, two hundred would only add time
            raise AssertionError(f"dockerd did not answer removing test containers: {exc}") from exc


SOURCES = ("files", "api")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Runs each test on the host's dockerd and on the engines its `engines` mark names, and
    a test that uses `each_source` once per source on each of them.

    `@pytest.mark.engines("docker26", "podman5:files")`: a name alone means every source, a
    `:source` only that one; `only=True`: not on the host's dockerd (a test of Podman).
    Only `engine` or `each_source` parametrized tests see the mark.
    """
    marker = metafunc.definition.get_closest_marker("engines")
    names = [] if marker and marker.kwargs.get("only") else ["docker"]
    names.extend(marker.args if marker else ())
    cases = []
    for name in names:
        engine, _, only = name.partition(":")
        assert engine in ENGINES and only in ("", *SOURCES), f"unknown engine case {name!r}"
        cases.extend((engine, source) for source in ((only,) if only else SOURCES))
    if "each_source" in metafunc.fixturenames:
        ids = [s if e == "docker" else f"{e}-{s}" for e, s in cases]
        metafunc.parametrize(("engine", "each_source"), cases, indirect=True, ids=ids)
    elif marker is not None:
        engines = list(dict.fromkeys(e for e, _ in cases))
        metafunc.parametrize("engine", engines, indirect=True)


@pytest.fixture
def each_source(request: pytest.FixtureRequest, bridge: Bridge, engine: Engine) -> str:
    """Runs a test once per source (the engine's log files, the Engine API stream): a module
    that must hold for both uses it with `pytestmark = pytest.mark.usefixtures("each_source")`.
    (Parametrized by `pytest_generate_tests`, with the engine.)"""
    source = str(request.param)
    if engine.spec.name == "docker":
        bridge.configure(docker={"source": source})
    else:
        (table,) = bridge.settings["engines"]
        table["source"] = source
    return source


@pytest.fixture
def containers(engine: Engine, label: str) -> Iterator[Containers]:
    instance = Containers(engine.client, label, image=engine.image)
    yield instance
    instance.cleanup()


def docker_logs(container: Any) -> list[bytes]:
    """What dockerd stored for a container: the ground truth to compare the journal with."""
    lines: list[bytes] = []
    for stream in ("stdout", "stderr"):  # apart: a line of one can fall between pieces of the other
        raw = container.logs(stdout=stream == "stdout", stderr=stream == "stderr")
        if raw:
            lines.extend(raw.split(b"\n")[:-1] if raw.endswith(b"\n") else raw.split(b"\n"))
    return lines


def writer_script(
    tag: str, lines: int, *, pace_every: int = 200, pace: str = "0.15", long_every: int = 500
) -> str:
    """A container workload: `lines` numbered lines `TAG-i`, every 7th on stderr, every
    `long_every`-th 40 KB long (three 16 KiB pieces sharing one timestamp), paced."""
    return (
        f"i=1; while [ $i -le {lines} ]; do "
        f'if [ $((i % {long_every})) -eq 0 ]; then printf "{tag}-%d " $i; '
        "head -c 40000 /dev/zero | tr '\\0' x; echo; "
        f"elif [ $((i % 7)) -eq 0 ]; then echo {tag}-$i >&2; "
        f"else echo {tag}-$i; fi; "
        f"[ $((i % {pace_every})) -eq 0 ] && sleep {pace}; "
        "i=$((i+1)); done"
    )


def line_keys(messages: list[bytes]) -> dict[bytes, int]:
    """Counts lines by their `TAG-i` key (long lines carry a payload after a space)."""
    counts: dict[bytes, int] = {}
    for message in messages:
        key = message.split(b" ", 1)[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def expected_keys(tag: str, lines: int) -> dict[bytes, int]:
    return {f"{tag}-{i}".encode(): 1 for i in range(1, lines + 1)}
