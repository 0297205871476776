"""The engines the integration tests run on: the host's, and Debian 13's run in containers.

The host has Debian 12's dockerd 20.10 and Podman 4.3.1 (`make setup`, `make setup-test`).
Debian 13's Docker 26.1 and Podman 5.4 run each in a container of `bridge-test/trixie-engines`
(scripts/build-trixie-engines.sh) on the host's dockerd, the way a user's host runs them:

- the engine's data root and its socket's directory are bind-mounted at the same paths on the
  host, so a bridge on the host reads the log files at the paths the engine reports, and talks
  to the engine on a host socket, as one of its `[[engines]]`;
- `--pid=host`: the container PIDs the engine reports are the host's, as the inner-journal
  source needs;
- every capability but the one these VMs withhold (so no `--privileged`), unconfined seccomp
  and AppArmor, every device, the host's cgroup tree writable.

With `--pid=host` the host sees the engine's processes, so they run under names the host's own
tooling never matches: `dockerd-26` (tests/integration/dockerd.py signals every `dockerd`) and
`podman5 ... system service` (test_several_engines.py stops the host's service by that
pattern). Each engine is started once per session, when a test first asks for it, and again
should it have died (a restart of the host's dockerd stops its container); it is removed, with
its data root, at the end.

`podman5rootless` is Podman 5.4 as a rootless user of that container (`ROOTLESS_USER`, its
subordinate IDs mapped by uidmap's newuidmap), on its defaults as `podman` would find them with
no flags: its storage under its home, which is in the data root (so its k8s-file logs are at the
same path on the host), its runtime directory on the container's /run; the socket is the only
path given, in the shared socket directory. Its own containers.conf gives them no network (a
rootless default is pasta, which the engine's container, on no network, could not set up).

The `engine` fixture is a test's engine (the host's dockerd unless the `engines` mark of
conftest.py parametrizes it), and makes it the bridge's only engine.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Bridge

BUILD_SCRIPT = Path(__file__).parents[2] / "scripts" / "build-trixie-engines.sh"
HOST_IMAGE = "bridge-test/busybox:latest"
HOST_PODMAN_SOCKET = "/run/podman/podman.sock"
ENGINE_LABEL = "journald-bridge-test-engine"
# The rootless Podman 5 user, made in its engine's container: IDs apart from the host's users
# and from the subordinate range of the host's rootless user (scripts/setup-test.sh).
ROOTLESS_USER, ROOTLESS_UID, ROOTLESS_SUBIDS = "jbpodman5", 4105, "400000:65536"


@dataclass(frozen=True)
class EngineSpec:
    """One engine of the tests: `name` is its `[[engines]]` name and the test id."""

    name: str
    kind: str  # "docker" or "podman"
    version: str  # what the tests and the README call it
    contained: bool  # run in a bridge-test/trixie-engines container, else the host's own
    rootless: bool = False  # Podman run by ROOTLESS_USER, not root (contained engines only)

    @property
    def image(self) -> str:
        """The busybox test image as this engine names it."""
        return f"localhost/{HOST_IMAGE}" if self.kind == "podman" else HOST_IMAGE


ENGINES = {
    spec.name: spec
    for spec in (
        EngineSpec("docker", "docker", "20.10", contained=False),
        EngineSpec("podman", "podman", "4.3", contained=False),
        EngineSpec("docker26", "docker", "26.1", contained=True),
        EngineSpec("podman5", "podman", "5.4", contained=True),
        EngineSpec("podman5rootless", "podman", "5.4", contained=True, rootless=True),
    )
}


def _run(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {result.returncode}\n{result.stderr.strip()}")
    return result.stdout


@dataclass
class ContainedEngine:
    """Docker 26 or Podman 5 in a container of the host's dockerd, its socket on the host."""

    spec: EngineSpec
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    loaded: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        tag = f"{self.spec.name}-{self.session}"
        self.container = f"jb-engine-{tag}"
        self.data_root = Path(f"/var/lib/jb-engines/{tag}")
        self.socket_dir = Path(f"/run/jb-engines/{tag}")
        self.socket = self.socket_dir / f"{self.spec.kind}.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def _command(self) -> str:
        d, run = self.data_root, f"/run/jb-{self.spec.name}"
        if self.spec.kind == "docker":
            return (
                "ln -sf /usr/sbin/dockerd /usr/local/bin/dockerd-26 && exec dockerd-26 "
                f"--data-root {d} --exec-root {run} --pidfile {run}.pid -H {self.host} "
                "--iptables=false --ip6tables=false --bridge=none --ip-masq=false "
                f"--cgroup-parent=/jb-{self.spec.name}"
            )
        if self.spec.rootless:
            return self._rootless_command()
        conf = "/etc/containers/containers.conf.d/20-tests.conf"
        return (
            f'printf \'[containers]\\nlog_driver = "k8s-file"\\n'
            f'[engine]\\ncgroup_manager = "cgroupfs"\\nevents_logger = "file"\\n\' > {conf} && '
            "ln -sf /usr/bin/podman /usr/local/bin/podman5 && exec podman5 "
            f"--root {d}/storage --runroot {run} --tmpdir {run}/tmp "
            f"system service --time=0 {self.host}"
        )

    def _rootless_command(self) -> str:
        user, uid, home = ROOTLESS_USER, ROOTLESS_UID, self.data_root / "home"
        run, conf = f"/run/user/{uid}", home / ".config/containers/containers.conf"
        return (
            f"useradd -u {uid} -M -d {home} -s /bin/sh {user} && "
            f"echo {user}:{ROOTLESS_SUBIDS} > /etc/subuid && cp /etc/subuid /etc/subgid && "
            f"install -d -o {uid} -g {uid} -m 0700 {home} {conf.parent.parent} {conf.parent} {run} && "
            f"chown {uid}:{uid} {self.socket_dir} && "
            f'printf \'[containers]\\nlog_driver = "k8s-file"\\nnetns = "none"\\n'
            f'[engine]\\ncgroup_manager = "cgroupfs"\\nevents_logger = "file"\\n\' > {conf} && '
            f"chown {uid}:{uid} {conf} && ln -sf /usr/bin/podman /usr/local/bin/podman5 && cd / && "
            f"exec setpriv --reuid={uid} --regid={uid} --init-groups env HOME={home} "
            f"XDG_RUNTIME_DIR={run} PODMAN_IGNORE_CGROUPSV1_WARNING=1 "
            f"podman5 system service --time=0 {self.host}"
        )

    def start(self) -> None:
        image = _run(str(BUILD_SCRIPT), timeout=600).strip()
        self.stop()
        self.data_root.mkdir(parents=True)
        self.socket_dir.mkdir(parents=True)
        _run(
            "docker", "run", "-d", "--name", self.container, "--label", f"{ENGINE_LABEL}=1",
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm",
            "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--pid=host", "--network=none", "--tmpfs", "/run", "--tmpfs", "/tmp",
            "-v", f"{self.data_root}:{self.data_root}", "-v", f"{self.socket_dir}:{self.socket_dir}",
            "--entrypoint", "/bin/sh", image, "-c", self._command(),
        )  # fmt: skip
        try:
            self._wait_answering(60)
            self.load(HOST_IMAGE)
        except BaseException:
            logs = subprocess.run(["docker", "logs", "--tail", "20", self.container],
                                  capture_output=True, text=True)  # fmt: skip
            self.stop()
            raise AssertionError(f"{self.spec.name} did not start:\n{logs.stderr}") from None

    def load(self, image: str) -> None:
        """Copies an image of the host's dockerd into this engine, once."""
        if image in self.loaded:
            return
        with self.client() as client:
            source = docker.from_env(version="1.41", timeout=300)
            try:
                client.images.load(b"".join(source.images.get(image).save(named=True)))
            finally:
                source.close()
        self.loaded.add(image)

    def _wait_answering(self, timeout: float) -> None:
        from tests.integration.conftest import wait_until

        wait_until(self.answers, timeout, f"{self.spec.name} to answer on {self.socket}", 0.2)

    def answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with self.client(timeout=5) as client:
                return bool(client.ping())
        except Exception:  # refused, reset, a timeout: not answering
            return False

    @contextlib.contextmanager
    def client(self, timeout: float = 120) -> Iterator[docker.DockerClient]:
        client = docker.DockerClient(base_url=self.host, version="1.41", timeout=timeout)
        try:
            yield client
        finally:
            client.close()

    def stop(self) -> None:
        """Removes the engine's containers, the engine and its data root."""
        if self.answers():
            with contextlib.suppress(Exception), self.client(timeout=60) as client:
                for c in client.containers.list(all=True):
                    c.remove(force=True)
        subprocess.run(["docker", "stop", "-t", "20", self.container], capture_output=True)
        subprocess.run(["docker", "rm", "-f", self.container], capture_output=True)
        # the engine's own mounts were in its container's namespace: plain directories now
        shutil.rmtree(self.data_root, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


class Engines:
    """The session's contained engines, each started on first use and again should it die."""

    def __init__(self) -> None:
        self.running: dict[str, ContainedEngine] = {}

    def get(self, spec: EngineSpec) -> ContainedEngine:
        engine = self.running.get(spec.name)
        if engine is None or not engine.answers():
            if engine is not None:
                engine.stop()
            engine = ContainedEngine(spec)
            engine.start()
            self.running[spec.name] = engine
        return engine

    def stop(self) -> None:
        for engine in self.running.values():
            engine.stop()
        self.running.clear()


def host_of(spec: EngineSpec) -> str:
    """The socket of one of the host's own engines."""
    return f"unix://{HOST_PODMAN_SOCKET}" if spec.kind == "podman" else ""


class Engine:
    """The engine a test runs its containers on: the host's dockerd unless parametrized."""

    def __init__(
        self,
        spec: EngineSpec,
        client: docker.DockerClient,
        host: str = "",
        contained: ContainedEngine | None = None,
    ) -> None:
        self.spec = spec
        self.client = client
        self.host = host  # "": the host's dockerd, DOCKER_HOST's default
        self.contained = contained

    @property
    def image(self) -> str:
        return self.spec.image

    def provide(self, image: str) -> None:
        """Makes an image of the host's dockerd available on this engine."""
        if self.contained is not None:
            self.contained.load(image)


@pytest.fixture(scope="session")
def contained_engines() -> Iterator[Engines]:
    """Debian 13's engines, each started on first use (tests/integration/engines.py)."""
    instance = Engines()
    yield instance
    instance.stop()


@pytest.fixture
def engine(
    request: pytest.FixtureRequest,
    bridge: Bridge,
    docker_client: docker.DockerClient,
    contained_engines: Engines,
) -> Iterator[Engine]:
    """The test's engine; any but the host's dockerd is the bridge's only engine."""
    spec = ENGINES[getattr(request, "param", "docker")]
    if spec.name == "docker":
        yield Engine(spec, docker_client)
        return
    contained = contained_engines.get(spec) if spec.contained else None
    host = contained.host if contained is not None else host_of(spec)
    bridge.configure(docker={"enabled": False}, engines=[{"name": spec.name, "host": host}])
    client = docker.DockerClient(base_url=host, version="1.41", timeout=120, max_pool_size=64)
    try:
        yield Engine(spec, client, host, contained)
    finally:
        client.close()
