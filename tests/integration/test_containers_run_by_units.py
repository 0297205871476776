"""Containers that systemd units run, under a real systemd as PID 1, with the real engines.

- Docker: a unit whose ExecStart is `docker run`, in the systemd test container (Debian 12's
  docker CLI, bind-mounted from the host) on the host's dockerd. Attached as usual, the CLI
  copies the container's output into the unit's own journal, so with the bridge every line is
  there twice. With the README's unit (`-a stdout`, `StandardOutput=null`,
  `StandardError=journal`, `-l journald-bridge.unit=%n`) the unit's journal keeps only the CLI's
  own messages and each line is in the journal once, from the bridge, carrying
  CONTAINER_SYSTEMD_UNIT; `systemctl stop` still reaches the container.
- Podman 5 (Debian 13, bridge-test/trixie-engines): quadlet `.container` units under that
  image's systemd. On quadlet's default journald log driver conmon writes the journal and the
  bridge skips the container; on `LogDriver=k8s-file` the bridge forwards it, with the unit
  from Podman's PODMAN_SYSTEMD_UNIT label.

The bridge runs on the host, as in every other integration test, into a journald instance of
its own; the units' journal is the systemd container's. On a real host both are one journal:
what is counted in each is what that one journal would hold. (The bridge inside the Debian 13
container would need its own Python: the tests' virtual environment is the host's 3.11.) For
that, Podman's storage is bind-mounted at the same path on the host, and its API service runs
under that systemd with its socket in the same directory.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import IMAGE, TEST_LABEL, Bridge, wait_until
from tests.integration.engines import BUILD_SCRIPT
from tests.integration.systemd_box import (
    ENGINE_OPTIONS,
    SystemdContainer,
    run,
    systemd_container,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = "trap 'echo stopped; exit 0' TERM; seq 1 3; echo oops >&2; sleep 120 & wait"
LINES = ["1", "2", "3", "oops"]

# ExecStart options and [Service] lines per way of writing the unit.
DOCKER_UNITS = {
    "attached": ("", ""),  # what most units say
    "linked": (  # the README's
        "-a stdout -l journald-bridge.unit=%n",
        "StandardOutput=null\nStandardError=journal\n",
    ),
}


def unit_copies(box: SystemdContainer, unit: str) -> list[str]:
    """The container's lines among what the unit itself wrote to the journal."""
    messages = [str(e.get("MESSAGE", "")).rstrip("\n") for e in box.journal(_SYSTEMD_UNIT=unit)]
    return [m for m in messages if m in (*LINES, "stopped")]


@pytest.fixture(scope="module")
def docker_box() -> Iterator[SystemdContainer]:
    with systemd_container("/usr/bin/docker:/usr/bin/docker:ro") as box:
        yield box


@pytest.mark.parametrize("style", DOCKER_UNITS)
def test_a_docker_run_unit(docker_box: SystemdContainer, bridge: Bridge, label: str, style: str):
    box, (options, service) = docker_box, DOCKER_UNITS[style]
    unit, name = f"web-{style}-{label}.service", f"web-{style}-{label}"
    bridge.start()
    box.write(
        f"/etc/systemd/system/{unit}",
        f"[Service]\nExecStart=/usr/bin/docker run --rm {options} --name {name} --network none"
        f' -l {TEST_LABEL}={label} {IMAGE} sh -c "{SCRIPT}"\n{service}',
    )
    try:
        box.exec("systemctl", "daemon-reload")
        box.exec("systemctl", "start", unit)
        wait_until(
            lambda: len(bridge.journald.entries(CONTAINER_NAME=name)) >= len(LINES),
            30,
            "the container's lines",
        )
        box.exec("systemctl", "stop", unit)  # the CLI passes SIGTERM on to the container
        assert box.show("Result", unit) == "success"
        entries = wait_until(
            lambda: len(e := bridge.journald.entries(CONTAINER_NAME=name)) > len(LINES) and e,
            30,
            "the line written on SIGTERM",
        )
    finally:
        run("docker", "rm", "-f", name, check=False)
    forwarded = sorted(e["MESSAGE"].decode() for e in entries)
    assert forwarded == sorted([*LINES, "stopped"])
    if style == "attached":  # every line twice in one journal
        copies = wait_until(
            lambda: sorted(unit_copies(box, unit)) == forwarded and forwarded,
            10,
            "the CLI's copies in the unit's journal",
        )
    else:
        copies = unit_copies(box, unit)
        assert copies == []
        assert all(e["CONTAINER_SYSTEMD_UNIT"] == unit.encode() for e in entries)
        assert len(bridge.journald.entries(CONTAINER_SYSTEMD_UNIT=unit)) == len(entries)
    print(f"{style}: {len(forwarded)} lines forwarded, {len(copies)} copied by the CLI")


@pytest.fixture(scope="module")
def quadlet_box() -> Iterator[tuple[SystemdContainer, str]]:
    """Debian 13's systemd and Podman 5; storage and API socket shared with the host (not
    under /tmp: Debian 13's systemd mounts a tmpfs there)."""
    image = run(str(BUILD_SCRIPT), timeout=600).strip()
    shared = Path(f"/var/lib/journald-bridge-tests/podman5-{uuid.uuid4().hex[:8]}")
    shared.mkdir(parents=True)
    socket = f"{shared}/podman.sock"
    try:
        with systemd_container(f"{shared}:{shared}", image=image, options=ENGINE_OPTIONS) as box:
            box.write(
                "/etc/containers/storage.conf",
                f'[storage]\ndriver = "overlay"\ngraphroot = "{shared}/storage"\n'
                'runroot = "/run/containers/storage"\n',
            )
            subprocess.run(
                f"docker save {IMAGE} | docker exec -i {box.name} podman load",
                shell=True,
                check=True,
                capture_output=True,
                timeout=120,
            )
            box.exec(
                "systemd-run",
                "--unit=podman-api",
                "--setenv=PODMAN_IGNORE_CGROUPSV1_WARNING=1",
                "podman",
                "system",
                "service",
                "--time=0",
                f"unix://{socket}",
            )
            wait_until(lambda: _answers(socket), 30, "Podman 5's API service")
            yield box, socket
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)


def _answers(socket: str) -> bool:
    ping = ["curl", "-sf", "--max-time", "2", "--unix-socket", socket, "http://d/_ping"]
    return subprocess.run(ping, capture_output=True).returncode == 0


def quadlet(box: SystemdContainer, name: str, label: str, driver: str | None) -> str:
    """Writes /etc/containers/systemd/NAME.container; quadlet makes NAME.service of it."""
    box.write(
        f"/etc/containers/systemd/{name}.container",
        f"[Container]\nImage=localhost/{IMAGE}\nContainerName={name}\nNetwork=none\n"
        f'Label={TEST_LABEL}={label}\nExec=sh -c "{SCRIPT}"\n'
        + (f"LogDriver={driver}\n" if driver else ""),
    )
    return f"{name}.service"


def test_quadlet_units_on_podman_5(
    quadlet_box: tuple[SystemdContainer, str], bridge: Bridge, label: str
):
    box, socket = quadlet_box
    bridge.configure(
        engines=[{"name": "podman5", "host": f"unix://{socket}"}], docker={"enabled": False}
    )
    bridge.start()
    journald_unit = quadlet(box, f"jd-{label}", label, None)  # quadlet's default: journald
    file_unit = quadlet(box, f"kf-{label}", label, "k8s-file")
    box.exec("systemctl", "daemon-reload")
    box.exec("systemctl", "start", journald_unit, file_unit)

    def forwarded() -> list[dict[str, Any]] | None:
        entries = bridge.journald.entries(CONTAINER_SYSTEMD_UNIT=file_unit)
        return entries if len(entries) >= len(LINES) else None

    entries = wait_until(forwarded, 60, "the k8s-file unit's lines")
    assert sorted(e["MESSAGE"].decode() for e in entries) == sorted(LINES)
    assert {e["CONTAINER_NAME"] for e in entries} == {f"kf-{label}".encode()}
    assert {e["CONTAINER_ENGINE"] for e in entries} == {b"podman5"}
    assert unit_copies(box, file_unit) == []  # k8s-file: the unit's journal has none of them

    # The journald-driver container: conmon wrote each line once; the bridge skipped it.
    wait_until(
        lambda: f"jd-{label} (" in bridge.log() and "already writes to the journal" in bridge.log(),
        30,
        "the bridge to skip the journald-driver container",
    )
    assert bridge.journald.entries(CONTAINER_NAME=f"jd-{label}") == []
    assert sorted(unit_copies(box, journald_unit)) == sorted(LINES)
