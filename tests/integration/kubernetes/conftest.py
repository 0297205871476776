"""Fixtures for the Kubernetes source on a real containerd: the private CRI runtime that
scripts/setup-cri.sh starts (never Docker's containerd), an emulated kubelet writing into this
test's own pods directory, and the bridge reading that directory with [kubernetes]."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sources.kubernetes.cri import CriClient

from ..conftest import Bridge, wait_until
from .kubelet import Kubelet

ROOT = Path(__file__).resolve().parents[3]
CRI_DIR = os.environ.get("CRI_DIR", "/var/lib/journald-bridge-cri")
CRI_SOCKET = f"{CRI_DIR}/containerd.sock"

pytestmark = pytest.mark.integration


def setup_cri() -> None:
    env = {**os.environ, "CRI_DIR": CRI_DIR}
    subprocess.run([str(ROOT / "scripts" / "setup-cri.sh")], check=True, env=env)


class CriRuntime:
    """The private containerd itself (started by scripts/setup-cri.sh, its pid in a file)."""

    def stop(self) -> None:
        pid = int(Path(CRI_DIR, "containerd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "containerd to stop")

    def start(self) -> None:
        setup_cri()


@pytest.fixture
def cri_runtime(cri: CriClient) -> CriRuntime:
    return CriRuntime()


@pytest.fixture(scope="session")
def cri() -> Iterator[CriClient]:
    setup_cri()
    client = CriClient(CRI_SOCKET, timeout=30)
    yield client
    client.close()


@pytest.fixture
def kubelet(cri: CriClient) -> Iterator[Kubelet]:
    # Under the runtime's directory, on disk: containerd writes the logs, the bridge reads them.
    base = Path(CRI_DIR) / "pods" / os.urandom(6).hex()
    (base / "pods").mkdir(parents=True)
    (base / "containers").mkdir()
    instance = Kubelet(cri, str(base / "pods"), str(base / "containers"))
    yield instance
    instance.close()
    subprocess.run(["rm", "-rf", str(base)], check=False)


def k8s_bridge(bridge: Bridge, kubelet: Kubelet, **kubernetes: Any) -> Bridge:
    """The bridge reading the kubelet's pods directory, and nothing else."""
    bridge.configure(
        docker={"enabled": False},
        kubernetes={
            "enabled": True,
            "pods_dir": kubelet.pods_dir,
            "cri_socket": CRI_SOCKET,
            "node_name": "node-1",
            "filter": {},
            **kubernetes,
        },
    )
    return bridge
