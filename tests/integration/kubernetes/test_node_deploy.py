"""deploy/kubernetes: the unit's drop-in keeps the exposure figure, the DaemonSet parses and
mounts what the bridge needs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"

pytestmark = pytest.mark.integration


def merged(base: str, drop_in: str) -> str:
    """The unit with the drop-in applied: a key it sets replaces the base's lines of that key
    (an empty value resets, as systemd does)."""
    sets: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in drop_in.splitlines():
        if line.startswith("["):
            section = line
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            sets.setdefault((section, key), []).append(value)
    out: list[str] = []
    for line in base.splitlines():
        if line.startswith("["):
            section = line
            out.append(line)
            out += [f"{k}={v}" for (s, k), vs in sets.items() if s == line for v in vs]
        elif not (
            "=" in line and not line.startswith("#") and (section, line.split("=")[0]) in sets
        ):
            out.append(line)
    return "\n".join(out) + "\n"


def test_the_kubernetes_drop_in_runs_as_root_without_capabilities_at_exposure_2_or_less(tmp_path):
    unit = tmp_path / "journald-bridge.service"
    unit.write_text(
        merged(
            (DEPLOY / "journald-bridge.service").read_text(),
            (DEPLOY / "kubernetes" / "journald-bridge-kubernetes.conf").read_text(),
        )
    )
    text = unit.read_text()
    assert "User=root" in text and "\nCapabilityBoundingSet=\n" in text
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print(f"exposure with the Kubernetes drop-in: {exposure}")
    assert exposure <= 2.0


def test_the_daemonset_mounts_the_pods_the_journal_and_the_cri_socket():
    # (no YAML parser among the dependencies: the lines that matter, as written)
    text = (DEPLOY / "kubernetes" / "daemonset.yaml").read_text()
    for path in ("/var/log/pods", "/run/systemd/journal", "/run/containerd/containerd.sock"):
        assert f"hostPath: {{path: {path}," in text
    assert "capabilities: {drop: [ALL]}" in text
    assert "automountServiceAccountToken: false" in text
    assert "\t" not in text
