"""A container that runs systemd as PID 1, to test the unit and the package under a real systemd.

It has no network and its own journald; the host's dockerd is reachable through the mounted
socket, so containers the tests start on the host are what the bridge inside forwards.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator

from tests.integration.conftest import wait_until

SYSTEMD_IMAGE = "bridge-test/systemd:latest"


def run(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


class SystemdContainer:
    def __init__(self, name: str) -> None:
        self.name = name

    def exec(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return run("docker", "exec", self.name, *args, check=check, timeout=timeout)

    def succeeds(self, *args: str) -> bool:
        return (
            subprocess.run(["docker", "exec", self.name, *args], capture_output=True).returncode
            == 0
        )

    def show(self, prop: str, unit: str = "journald-bridge") -> str:
        return self.exec("systemctl", "show", "-p", prop, "--value", unit).strip()

    def write(self, path: str, text: str) -> None:
        subprocess.run(
            ["docker", "exec", "-i", self.name, "sh", "-c", f"cat > {path}"],
            input=text,
            text=True,
            check=True,
        )

    def journal(self, **matches: str) -> list[dict[str, str]]:
        out = self.exec(
            "journalctl", "-o", "json", "--no-pager", *(f"{k}={v}" for k, v in matches.items())
        )
        return [json.loads(line) for line in out.splitlines() if line.strip()]


# What a container engine inside needs beyond the flags below (reference/machine.md: every
# capability but CAP_SYS_RESOURCE, which these VMs withhold, and every device).
ENGINE_OPTIONS = (
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "systempaths=unconfined",
    "--device-cgroup-rule",
    "a *:* rwm",
)


@contextlib.contextmanager
def systemd_container(
    *mounts: str, image: str = SYSTEMD_IMAGE, options: tuple[str, ...] = ()
) -> Iterator[SystemdContainer]:
    """Boots one; `mounts` are `-v` arguments beyond the docker socket and the cgroup tree,
    `options` more `docker run` options (ENGINE_OPTIONS for an engine inside)."""
    name = f"jb-systemd-{uuid.uuid4().hex[:8]}"
    volumes = [arg for mount in mounts for arg in ("-v", mount)]
    run(
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--cap-add",
        "SYS_ADMIN",
        # what the unit asks for, as a host's systemd has them to give
        "--cap-add",
        "DAC_READ_SEARCH",
        "--cap-add",
        "SYS_PTRACE",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--network",
        "none",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "--cgroupns=host",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        *volumes,
        *options,
        image,
        "/lib/systemd/systemd",
    )
    box = SystemdContainer(name)
    try:
        wait_until(
            lambda: (
                box.exec("systemctl", "is-system-running", check=False).strip()
                in ("running", "degraded")
            ),
            60,
            "systemd to boot",
        )
        yield box
    finally:
        run("docker", "rm", "-f", name, check=False)
