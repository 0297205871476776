"""The container image, run with the README's `docker run` command: a container's lines arrive
exactly once across `docker restart` of the bridge's container, and across `docker rm -f` and a
new run on the same state volume.

The command is read from the README itself; the test changes only what must differ on a shared
machine: the names, the journal (this test's journald namespace, whose socket directory is
mounted in place of the default one) and a filter, so that the bridge forwards this test's
containers and no one else's.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import bridge
from tests.integration.conftest import (
    IMAGE,
    TEST_LABEL,
    Containers,
    Journald,
    docker_logs,
    expected_keys,
    line_keys,
    wait_until,
)
from tests.integration.systemd_box import run

# A cold build (the wheelhouse, then dpkg-buildpackage and lintian) takes minutes on a busy machine,
# and counts against the first test's timeout.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).parents[2]
TAG = f"journald-bridge:{bridge.__version__}"


def documented_run() -> list[str]:
    """The README's `docker run -d ...` command, as arguments (image last)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^    docker run -d .*?journald-bridge:\S+$", text, re.MULTILINE | re.DOTALL)
    assert block, "the README's docker run command"
    return shlex.split(block.group(0).replace("\\\n", " "))


def adapted(args: list[str], name: str, volume: str, journald: Journald, label: str) -> list[str]:
    out: list[str] = []
    pairs = iter(args)
    for arg in pairs:
        if arg == "--name":
            out += [
                arg,
                name,
                "-e",
                f'JOURNALD_BRIDGE_FILTER__INCLUDE_LABELS=["{TEST_LABEL}={label}"]',
            ]
            next(pairs)
        elif arg == "-v":
            mount = next(pairs)
            if mount.startswith("/run/systemd/journal:"):
                directory = str(Path(journald.socket).parent)
                mount = f"{directory}:{directory}:ro"
                out += [
                    "-e",
                    f"JOURNALD_BRIDGE_JOURNAL__SOCKET={journald.socket}",
                    "-e",
                    f"JOURNALD_BRIDGE_JOURNAL__NAMESPACE={journald.namespace}",
                ]
            elif mount.startswith("journald-bridge-state:"):
                mount = mount.replace("journald-bridge-state", volume, 1)
            out += ["-v", mount]
        elif arg.startswith("journald-bridge:"):
            out.append(TAG)
        else:
            out.append(arg)
    return out


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="jb-image-") as temp:
        deb = run(str(ROOT / "scripts/build-deb.sh"), temp, timeout=900).strip().splitlines()[-1]
        tag = run(str(ROOT / "scripts/build-image.sh"), deb, timeout=900).strip().splitlines()[-1]
    assert tag == TAG
    yield tag


class BridgeContainer:
    def __init__(self, args: list[str], name: str) -> None:
        self.args = args
        self.name = name

    def run(self) -> None:
        run("docker", "run", *self.args)
        wait_until(self.ready, 60, "the bridge's container to be ready", interval=0.5)

    def ready(self) -> bool:
        state = run("docker", "inspect", "-f", "{{.State.Status}}", self.name).strip()
        if state not in ("running", "created", "restarting"):
            raise AssertionError(f"the bridge's container is {state}:\n{self.logs()}")
        probe = (
            "import urllib.request; "
            "urllib.request.urlopen('http://127.0.0.1:9580/readyz', timeout=2)"
        )
        return (
            subprocess.run(
                ["docker", "exec", self.name, "/opt/journald-bridge/bin/python", "-c", probe],
                capture_output=True,
            ).returncode
            == 0
        )

    def logs(self) -> str:
        result = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return result.stdout + result.stderr


@pytest.fixture
def bridge_container(image, journald, label) -> Iterator[BridgeContainer]:
    name = f"jb-image-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-state"
    args = adapted(documented_run()[2:], name, volume, journald, label)
    container = BridgeContainer(args, name)
    try:
        yield container
    finally:
        run("docker", "rm", "-f", name, check=False)
        with contextlib.suppress(AssertionError):
            run("docker", "volume", "rm", volume, check=False)


def test_the_image_carries_the_version(image):
    out = run("docker", "run", "--rm", "--network", "none", image, "--version")
    assert out.strip() == f"journald-bridge {bridge.__version__}"
    labels = run("docker", "image", "inspect", "-f", "{{json .Config.Labels}}", image)
    assert f'"org.opencontainers.image.version":"{bridge.__version__}"' in labels
    assert '"journald-bridge.enable":"false"' in labels


def test_lines_arrive_once_across_restart_and_replacement(
    bridge_container: BridgeContainer, journald: Journald, containers: Containers
):
    bridge_container.run()
    # it writes until stopped, so the restarts fall inside it however slow they are
    writer = containers.run("i=1; while :; do echo img-$i; i=$((i+1)); sleep 0.05; done")

    def forwarded() -> int:
        return len(journald.messages(writer.id))

    wait_until(lambda: forwarded() >= 30, 60, "the first lines")
    run("docker", "restart", bridge_container.name, timeout=60)  # SIGTERM: drain, save, exit 0
    wait_until(bridge_container.ready, 60, "ready after the restart", interval=0.5)
    before = forwarded()
    wait_until(lambda: forwarded() >= before + 30, 60, "lines after the restart")
    run("docker", "rm", "-f", bridge_container.name)  # SIGKILL: no drain
    bridge_container.run()  # a new container on the same state volume
    before = forwarded()
    wait_until(lambda: forwarded() >= before + 30, 60, "lines after the replacement")

    writer.kill()
    lines = len(docker_logs(writer))
    wait_until(lambda: forwarded() >= lines, 60, "every line")
    assert line_keys(journald.messages(writer.id)) == expected_keys("img", lines)

    entry = journald.entries(CONTAINER_ID_FULL=writer.id)[0]
    assert entry["CONTAINER_NAME"] == writer.name.encode()
    assert entry["IMAGE_NAME"] == IMAGE.encode()
    assert entry["_UID"] == b"0"  # root in the container: the uid its read-back matches
    # as root in the container it reads the engine's own log files, not the API
    assert f"container {writer.name}: reading its log file" in bridge_container.logs()
