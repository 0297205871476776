"""The unit under a real systemd as PID 1 (in a container), installed from wheels.

The container has no network: the bridge is installed there by deploy/install.sh from wheels
built on this host, and reads the host's dockerd through the mounted socket. Its journal is the
container's own journald.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import IMAGE, TEST_LABEL, wait_until
from tests.integration.systemd_box import run, systemd_container

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "deploy" / "journald-bridge.service"

# Hardening options of the unit that cannot work inside this test container, with the reason.
# (None so far: every option of the unit is in force in the test.) They would be switched off
# by a drop-in in the test only, never removed from the unit.
UNSUPPORTED_IN_CONTAINER: dict[str, str] = {}

# Test-only timing: a watchdog of 3 s instead of 30 s, and a short abort timeout, because a
# SIGSTOPped process holds SIGABRT until systemd's final SIGKILL.
TEST_DROPIN = "[Service]\nWatchdogSec=3s\nTimeoutAbortSec=3s\n" + "".join(
    f"{option.split('=')[0]}=\n" for option in UNSUPPORTED_IN_CONTAINER
)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--disable-pip-version-check",
        "--wheel-dir",
        str(directory),
        str(ROOT),
        timeout=600,
    )
    return directory


@pytest.fixture(scope="module")
def systemd_box(wheels):
    with systemd_container(f"{ROOT}:/src:ro", f"{wheels}:/wheels:ro") as box:
        yield box


def test_unit_passes_the_security_threshold():
    out = run("systemd-analyze", "security", "--offline=yes", "--threshold=20", str(UNIT))
    exposure = float(
        out.strip().splitlines()[-1].split("level for journald-bridge.service: ")[1].split()[0]
    )
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= 2.0


def test_the_service_under_systemd(systemd_box, containers, docker_client):
    box = systemd_box
    box.exec("/src/deploy/install.sh", "install", "--wheels", "/wheels")
    box.exec("systemd-analyze", "verify", "/etc/systemd/system/journald-bridge.service")
    config = f'[filter]\ninclude_labels = ["{TEST_LABEL}={containers.label}"]\n'
    box.write("/etc/journald-bridge/bridge.toml", config)
    box.exec("mkdir", "-p", "/etc/systemd/system/journald-bridge.service.d")
    box.write("/etc/systemd/system/journald-bridge.service.d/test.conf", TEST_DROPIN)
    box.exec("systemctl", "daemon-reload")

    # start returns only after READY=1, whose STATUS= is already there.
    box.exec("systemctl", "start", "journald-bridge")
    assert box.exec("systemctl", "is-active", "journald-bridge").strip() == "active"
    assert "containers attached" in box.show("StatusText")

    # A container on the host's dockerd lands in this systemd's journal with Docker's fields.
    name = f"sd-{containers.label}"
    c = containers.run("echo hi; echo oops >&2", name=name)
    entries = wait_until(
        lambda: len(e := box.journal(CONTAINER_NAME=name)) >= 2 and e, 30, "the container's lines"
    )
    got = {e["MESSAGE"]: e for e in entries}
    assert got["hi"]["PRIORITY"] == "6" and got["oops"]["PRIORITY"] == "3"
    assert got["hi"]["CONTAINER_ID_FULL"] == c.id and got["hi"]["IMAGE_NAME"] == IMAGE
    assert got["hi"]["_SYSTEMD_UNIT"] == "journald-bridge.service"

    # reload applies a changed filter, without a restart.
    pid = box.show("MainPID")
    box.write(
        "/etc/journald-bridge/bridge.toml",
        config + f'exclude_names = ["skip-{containers.label}*"]\n',
    )
    box.exec("systemctl", "reload", "journald-bridge")
    skipped = containers.run("echo skipped", name=f"skip-{containers.label}")
    kept = containers.run("echo kept", name=f"keep-{containers.label}")
    wait_until(lambda: box.journal(CONTAINER_NAME=kept.name), 30, "the kept container's line")
    skipped.wait(timeout=30)
    time.sleep(1)
    assert box.journal(CONTAINER_NAME=skipped.name) == []
    assert box.show("MainPID") == pid

    # An invalid config on reload is refused; the old one stays in force.
    box.write("/etc/journald-bridge/bridge.toml", config + "[forward]\nmax_line_bytes = 1\n")
    box.exec("systemctl", "reload", "journald-bridge")
    wait_until(
        lambda: "reload refused" in box.exec("journalctl", "-u", "journald-bridge", "--no-pager"),
        10,
        "the refusal",
    )
    assert box.exec("systemctl", "is-active", "journald-bridge").strip() == "active"
    box.write("/etc/journald-bridge/bridge.toml", config)

    # A frozen bridge stops pinging the watchdog: systemd restarts it.
    restarts = int(box.show("NRestarts"))
    box.exec("kill", "-STOP", pid)
    wait_until(lambda: int(box.show("NRestarts")) > restarts, 30, "a watchdog restart")
    wait_until(
        lambda: (
            box.exec("systemctl", "is-active", "journald-bridge", check=False).strip() == "active"
        ),
        30,
        "active again",
    )
    assert box.show("MainPID") != pid
    assert "Watchdog timeout" in box.exec("journalctl", "-u", "journald-bridge", "--no-pager")
    after = containers.run("echo after-watchdog")
    wait_until(lambda: box.journal(CONTAINER_ID_FULL=after.id), 30, "lines after the restart")

    # stop: clean exit, positions saved.
    box.exec("systemctl", "stop", "journald-bridge")
    assert box.show("Result") == "success"
    assert box.show("ExecMainStatus") == "0"
    state = json.loads(box.exec("cat", "/var/lib/private/journald-bridge/positions.json"))
    assert after.id in state["engines"]["docker"]
    messages = [e["MESSAGE"] for e in box.journal(CONTAINER_NAME=name)]
    assert sorted(messages) == ["hi", "oops"]  # nothing repeated across the watchdog restart

    box.exec("/src/deploy/install.sh", "uninstall")
    assert not box.succeeds("test", "-e", "/opt/journald-bridge")
    assert not box.succeeds("test", "-e", "/etc/systemd/system/journald-bridge.service")
    assert box.succeeds("test", "-e", "/etc/journald-bridge/bridge.toml")  # the config is kept
