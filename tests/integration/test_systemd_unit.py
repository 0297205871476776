"""The unit under a real systemd as PID 1 (in a container), installed from wheels.

The container has no network: the bridge is installed there by deploy/install.sh from wheels
built on this host, and reads the host's dockerd through the mounted socket. Its journal is the
container's own journald.

Inner journals need an engine of the box's own: the bridge opens `/proc/<pid>/root` with the
pid its engine reports, and the host's dockerd reports pids of the host's PID namespace, which
the box (systemd as PID 1 has a namespace of its own) cannot see. So the box also runs a dockerd
of its own, from the host's binaries (vfs on a tmpfs, no networking; NET_ADMIN only so that its
runc can bring up a container's loopback), with one container that runs journald alone.
"""

from __future__ import annotations

import json
import re
import shutil
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


# The box's own engine (see the module): the host's binaries, its socket in the docker group.
ENGINE_BINARIES = ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker")
INNER_SOCKET = "unix:///run/inner-docker.sock"
INNER_DOCKERD = (
    "systemd-run --unit inner-dockerd /usr/local/bin/dockerd --host " + INNER_SOCKET + " -G docker"
    " --bridge none --iptables=false --ip-masq=false --ip-forward=false --userland-proxy=false"
    " --storage-driver vfs --exec-root /run/inner-docker --pidfile /run/inner-docker.pid"
)
# An image of journald alone, from the box's own files: `docker import` of the binaries, their
# libraries, a machine id and a root user.
JOURNALD_IMAGE = f"""set -e
bins="/usr/lib/systemd/systemd-journald /usr/bin/systemd-cat /bin/cat /bin/sh"
files=$( (echo $bins; for b in $bins; do ldd $b | grep -o '/[^ ]*'; done) | sort -u)
rm -rf /tmp/img && mkdir -p /tmp/img/etc /tmp/img/run /tmp/img/proc /tmp/img/dev /tmp/img/sys
systemd-id128 new > /tmp/img/etc/machine-id
echo root:x:0:0:root:/root:/bin/sh > /tmp/img/etc/passwd
echo root:x:0: > /tmp/img/etc/group
tar -C / -chf /tmp/img.tar $(echo $files | sed 's#^/##; s# /# #g')
tar -C /tmp/img -rf /tmp/img.tar .
docker -H {INNER_SOCKET} import /tmp/img.tar jb-journald:1 >/dev/null
"""


@pytest.fixture(scope="module")
def systemd_box(wheels):
    engine = [f"{shutil.which(b)}:/usr/local/bin/{b}:ro" for b in ENGINE_BINARIES]
    extra = ["--cap-add", "NET_ADMIN", "--tmpfs", "/var/lib/docker:exec"]
    with systemd_container(
        f"{ROOT}:/src:ro", f"{wheels}:/wheels:ro", *engine, options=tuple(extra)
    ) as box:
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


def child_file(box, bridge_pid: str, module: str, name: str) -> str:
    """/proc/<pid>/<name> of the bridge's child process that runs `module`."""
    pattern = module.replace(".", "[.]")  # [.]: this shell's own command line does not match
    script = (
        f"for p in /proc/[0-9]*; do grep -qa '{pattern}' $p/cmdline 2>/dev/null"
        f" && grep -q '^PPid:.{bridge_pid}$' $p/status && cat $p/{name} && exit 0; done; exit 1"
    )
    return box.exec("sh", "-c", script)


def worker_status(box, bridge_pid: str) -> dict[str, str]:
    """/proc/<pid>/status of the bridge's inner-journal worker, as name -> value."""
    out = child_file(box, bridge_pid, "inner_journal.worker", "status")
    status = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
    assert status.get("PPid", "").strip() == bridge_pid, out
    return {k: v.strip() for k, v in status.items()}


def test_an_inner_journal_under_the_unit_by_a_worker_without_capabilities(systemd_box, label):
    box = systemd_box
    inner = ["docker", "-H", INNER_SOCKET]
    box.exec("/src/deploy/install.sh", "install", "--wheels", "/wheels")
    box.exec("sh", "-c", INNER_DOCKERD)
    try:
        wait_until(lambda: box.succeeds(*inner, "version"), 30, "the box's dockerd")
        box.exec("sh", "-c", JOURNALD_IMAGE)
        box.exec(
            *inner, "run", "-d", "--name", "jb-journald", "--label", f"{TEST_LABEL}={label}",
            "--network", "none", "--security-opt", "apparmor=unconfined",
            "jb-journald:1", "/usr/lib/systemd/systemd-journald",
        )  # fmt: skip
        box.write(
            "/etc/journald-bridge/bridge.toml",
            f'[filter]\ninclude_labels = ["{TEST_LABEL}={label}"]\n[docker]\nenabled = false\n'
            f'[[engines]]\nname = "inner"\nhost = "{INNER_SOCKET}"\n',
        )
        box.exec("systemctl", "restart", "journald-bridge")
        box.exec(*inner, "exec", "jb-journald", "sh", "-c", "echo hello | systemd-cat -t innerapp")
        (entry,) = wait_until(
            lambda: box.journal(SYSLOG_IDENTIFIER="innerapp", CONTAINER_STREAM="journal"),
            60,
            "the inner journal's line",
        )
        assert entry["MESSAGE"] == "hello" and entry["CONTAINER_NAME"] == "jb-journald"
        assert entry["CONTAINER_ENGINE"] == "inner" and entry["INNER_TRANSPORT"] == "stdout"
        assert entry["_SYSTEMD_UNIT"] == "journald-bridge.service"

        # the worker parses container-written bytes with nothing to escalate with
        status = worker_status(box, box.show("MainPID"))
        assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == "0" * 16, status
        assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status

        # The log file opener runs in real time (SCHED_RR, 1) where the unit's LimitRTPRIO=1
        # took effect, under its LimitRTTIME=; else at the normal policy. (These VMs' capability
        # bounding set lacks CAP_SYS_RESOURCE, so the box's systemd cannot raise RLIMIT_RTPRIO
        # from 0: the first branch runs on a host; test_opener covers real time itself.)
        pid = box.show("MainPID")
        limits = child_file(box, pid, "logfiles.opener", "limits")
        assert re.search(r"Max realtime timeout\s+2000000\s+2000000\s", limits), limits
        granted = re.search(r"Max realtime priority\s+(\d+)", limits)
        assert granted, limits
        stat = child_file(box, pid, "logfiles.opener", "stat").rsplit(")", 1)[1].split()
        policy = (stat[38], stat[37])  # policy, rt_priority (fields 41, 40 of /proc/<pid>/stat)
        print(f"opener under the unit: RLIMIT_RTPRIO {granted[1]}, policy {policy}")
        assert policy == (("2", "1") if granted[1] == "1" else ("0", "0")), (policy, limits)
    finally:
        box.exec("systemctl", "stop", "journald-bridge", check=False)
        box.exec(*inner, "rm", "-f", "jb-journald", check=False)
        box.exec("systemctl", "stop", "inner-dockerd", check=False)
        box.exec("/src/deploy/install.sh", "uninstall", check=False)
