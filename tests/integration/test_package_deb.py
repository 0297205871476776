"""The Debian package under a real systemd as PID 1 (in a container): install, reload, upgrade,
remove, purge.

Both packages are built by scripts/build-deb.sh, as `make deb` builds them: this tree's, and a
newer build of the same tree with its version raised. The container has no network: apt installs
the local file, whose dependencies Debian 12's base already holds. The host's dockerd is reached
through the mounted socket and its data root is mounted read-only, so the bridge inside reads the
engine's log files as on a real host.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import bridge
from tests.integration.conftest import (
    IMAGE,
    TEST_LABEL,
    docker_logs,
    expected_keys,
    line_keys,
    wait_until,
)
from tests.integration.systemd_box import SystemdContainer, run, systemd_container

# A cold build (the wheelhouse, then dpkg-buildpackage and lintian) takes minutes on a busy machine,
# and counts against the first test's timeout.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).parents[2]
NEWER = f"{bridge.__version__}.post1"
CONFIG = "/etc/journald-bridge/bridge.toml"
STATE = "/var/lib/private/journald-bridge/positions.json"
APT = ("apt-get", "install", "-y", "--no-install-recommends")
# An edited config is kept as it is; the package's own goes next to it as .dpkg-dist.
KEEP_CONFIG = ("-o", "Dpkg::Options::=--force-confold")
# What a build reads (scripts/build-deb.sh copies no more than these into its build).
SOURCES = (
    "pyproject.toml",
    "README.md",
    "CHANGELOG.md",
    "bridge",
    "config",
    "deploy",
    "debian",
    "scripts",
)


def build_deb(source: Path, out: Path) -> Path:
    printed = run(str(source / "scripts" / "build-deb.sh"), str(out), timeout=900)
    return Path(printed.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def debs() -> Iterator[dict[str, Path]]:
    # Not under pytest's basetemp: on this shared machine another session's pytest removes the
    # older basetemps while a build here still runs in one.
    with tempfile.TemporaryDirectory(prefix="jb-debs-") as temp:
        yield build_both(Path(temp))


def build_both(temp: Path) -> dict[str, Path]:
    out = temp / "debs"
    current = build_deb(ROOT, out)
    newer_tree = temp / "newer"
    newer_tree.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name,
                newer_tree / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        else:
            shutil.copy2(ROOT / name, newer_tree / name)
    init = newer_tree / "bridge" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{bridge.__version__}"', f'"{NEWER}"'))
    newer = build_deb(newer_tree, out)
    assert current.name == f"journald-bridge_{bridge.__version__}_amd64.deb"
    assert newer.name == f"journald-bridge_{NEWER}_amd64.deb"
    # dpkg orders them as an upgrade
    subprocess.run(["dpkg", "--compare-versions", NEWER, "gt", bridge.__version__], check=True)
    return {"current": current, "newer": newer}


@pytest.fixture(scope="module")
def box(debs):
    directory = debs["current"].parent
    logs = run("docker", "info", "-f", "{{.DockerRootDir}}").strip() + "/containers"
    with systemd_container(f"{directory}:/debs:ro", f"{logs}:{logs}:ro") as box:
        yield box


def version_inside(box: SystemdContainer) -> str:
    return box.exec("/opt/journald-bridge/bin/journald-bridge", "--version").split()[-1]


def test_the_package_is_built_with_the_unit_and_config_of_deploy(debs):
    listing = run("dpkg-deb", "-c", str(debs["current"]))
    assert "./lib/systemd/system/journald-bridge.service" in listing
    assert "./etc/journald-bridge/bridge.toml" in listing
    assert "./opt/journald-bridge/bin/journald-bridge" in listing
    assert "__pycache__" not in listing  # compiled by the postinst, removed by the prerm
    assert run("dpkg-deb", "-f", str(debs["current"]), "Version").strip() == bridge.__version__
    extracted = Path(run("mktemp", "-d").strip())
    try:
        run("dpkg-deb", "-x", str(debs["current"]), str(extracted))
        unit = extracted / "lib/systemd/system/journald-bridge.service"
        assert unit.read_bytes() == (ROOT / "deploy/journald-bridge.service").read_bytes()
        config = extracted / "etc/journald-bridge/bridge.toml"
        assert config.read_bytes() == (ROOT / "config/bridge.toml").read_bytes()
    finally:
        shutil.rmtree(extracted)
    control = Path(run("mktemp", "-d").strip())
    try:
        run("dpkg-deb", "-e", str(debs["current"]), str(control))
        assert (control / "conffiles").read_text().split() == [CONFIG]
    finally:
        shutil.rmtree(control)


def test_install_reload_upgrade_remove_purge(box, debs, containers):
    # The config an operator edited before installing: only this test's containers. dpkg keeps
    # it (confold) and puts the package's next to it.
    config = f'[filter]\ninclude_labels = ["{TEST_LABEL}={containers.label}"]\n'
    box.exec("mkdir", "-p", "/etc/journald-bridge")
    box.write(CONFIG, config)

    # install: enabled and started, Debian's way (the postinst waits for READY=1)
    box.exec(*APT, *KEEP_CONFIG, f"/debs/{debs['current'].name}", timeout=300)
    assert box.exec("systemctl", "is-enabled", "journald-bridge").strip() == "enabled"
    assert box.exec("systemctl", "is-active", "journald-bridge").strip() == "active"
    assert version_inside(box) == bridge.__version__
    assert box.exec("cat", CONFIG) == config
    assert box.succeeds("test", "-f", f"{CONFIG}.dpkg-dist")
    box.exec("systemd-analyze", "verify", "/lib/systemd/system/journald-bridge.service")

    # a container's lines arrive with Docker's fields, read from the engine's log file
    name = f"deb-{containers.label}"
    c = containers.run("echo hi; echo oops >&2", name=name)
    entries = wait_until(
        lambda: len(e := box.journal(CONTAINER_NAME=name)) >= 2 and e, 30, "the container's lines"
    )
    got = {e["MESSAGE"]: e for e in entries}
    assert got["hi"]["PRIORITY"] == "6" and got["oops"]["PRIORITY"] == "3"
    assert got["hi"]["CONTAINER_ID_FULL"] == c.id and got["hi"]["IMAGE_NAME"] == IMAGE
    assert got["hi"]["_SYSTEMD_UNIT"] == "journald-bridge.service"
    log = box.exec("journalctl", "-u", "journald-bridge", "--no-pager")
    assert f"container {name}: reading its log file" in log

    # reload applies a changed filter in the same process
    pid = box.show("MainPID")
    box.write(CONFIG, config + f'exclude_names = ["skip-{containers.label}*"]\n')
    box.exec("systemctl", "reload", "journald-bridge")  # SIGHUP: applied a moment later
    wait_until(
        lambda: "configuration reloaded" in box.exec("journalctl", "-u", "journald-bridge"),
        30,
        "the reload",
    )
    skipped = containers.run("echo skipped", name=f"skip-{containers.label}")
    kept = containers.run("echo kept", name=f"keep-{containers.label}")
    wait_until(lambda: box.journal(CONTAINER_NAME=kept.name), 30, "the kept container's line")
    skipped.wait(timeout=30)
    assert box.journal(CONTAINER_NAME=skipped.name) == []
    assert box.show("MainPID") == pid
    edited = box.exec("cat", CONFIG)

    # upgrade while a container writes: the bridge stops before the unpack and forwards on from
    # its saved positions, so every line arrives once
    # (it writes until stopped, so a slow upgrade on a busy machine still falls inside it)
    writer = containers.run(
        "i=1; while :; do echo up-$i; i=$((i+1)); sleep 0.05; done", name=f"up-{containers.label}"
    )

    def forwarded() -> int:
        return len(box.journal(CONTAINER_ID_FULL=writer.id))

    wait_until(lambda: forwarded() >= 50, 60, "lines before the upgrade")
    box.exec(*APT, *KEEP_CONFIG, f"/debs/{debs['newer'].name}", timeout=300)
    assert version_inside(box) == NEWER
    assert box.exec("systemctl", "is-active", "journald-bridge").strip() == "active"
    assert box.show("MainPID") != pid
    assert box.exec("cat", CONFIG) == edited
    after = forwarded()
    wait_until(lambda: forwarded() >= after + 30, 60, "lines after the upgrade")
    writer.kill()
    lines = len(docker_logs(writer))
    wait_until(lambda: forwarded() >= lines, 60, "every line")
    messages = [e["MESSAGE"].encode() for e in box.journal(CONTAINER_ID_FULL=writer.id)]
    assert line_keys(messages) == expected_keys("up", lines)

    # remove: stopped, the code gone; the config and the positions stay
    box.exec("apt-get", "remove", "-y", "journald-bridge", timeout=120)
    assert box.exec("systemctl", "is-active", "journald-bridge", check=False).strip() != "active"
    assert not box.succeeds("test", "-e", "/opt/journald-bridge")
    assert not box.succeeds("test", "-e", "/lib/systemd/system/journald-bridge.service")
    assert box.exec("cat", CONFIG) == edited
    assert writer.id in box.exec("cat", STATE)
    assert box.exec("dpkg-query", "-W", "-f", "${Status}", "journald-bridge") == (
        "deinstall ok config-files"
    )

    # purge: the config, the state and the enablement go too
    box.exec("apt-get", "purge", "-y", "journald-bridge", timeout=120)
    assert not box.succeeds("test", "-e", "/etc/journald-bridge")
    assert not box.succeeds("test", "-e", "/var/lib/private/journald-bridge")
    assert not box.succeeds("test", "-e", "/var/lib/journald-bridge")
    assert not box.succeeds(
        "test", "-e", "/etc/systemd/system/multi-user.target.wants/journald-bridge.service"
    )
    assert not box.succeeds("dpkg-query", "-W", "journald-bridge")
