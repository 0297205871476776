"""Pod logs through the bridge, on a real containerd writing CRI files and an emulated kubelet:
fields, labels, P/F joining across a reopen, exit mid-line, deleted pods, restarts."""

from __future__ import annotations

import pytest

from ..conftest import Bridge, Journald, wait_until
from .conftest import k8s_bridge
from .kubelet import Kubelet

pytestmark = pytest.mark.integration


def test_a_pods_lines_carry_its_fields_and_its_labels_once_allowed(
    bridge: Bridge, journald: Journald, kubelet: Kubelet
):
    k8s_bridge(bridge, kubelet)
    bridge.configure(forward={"labels": ["app", "kubernetes.namespace"]})
    bridge.start()
    pod = kubelet.run_pod(
        "api-0",
        "shop",
        labels={"app": "api", "kubernetes.namespace": "forged", "secret": "no"},
        annotations={"note": "x"},
    )
    c = kubelet.start(pod, "web", "echo hello; echo oops >&2")
    kubelet.wait_exited(c)
    entries = wait_until(
        lambda: (e := journald.entries(KUBERNETES_POD_NAME="api-0")) and len(e) >= 2 and e,
        30,
        "the pod's two lines",
    )
    by_message = {e["MESSAGE"]: e for e in entries}
    assert sorted(by_message) == [b"hello", b"oops"]
    e = by_message[b"hello"]
    assert e["CONTAINER_ID_FULL"] == c.id.encode()
    assert e["CONTAINER_ID"] == c.id[:12].encode()
    assert e["CONTAINER_NAME"] == f"k8s_web_api-0_shop_{pod.uid}_0".encode()
    assert e["IMAGE_NAME"] == b"docker.io/bridge-test/busybox:latest"
    assert e["CONTAINER_ENGINE"] == b"kubernetes"
    assert e["KUBERNETES_NAMESPACE"] == b"shop"  # not the forged label's
    assert e["KUBERNETES_POD_UID"] == pod.uid.encode()
    assert e["KUBERNETES_CONTAINER_NAME"] == b"web"
    assert e["KUBERNETES_RESTART_COUNT"] == b"0"
    assert e["KUBERNETES_NODE"] == b"node-1"
    assert e["APP"] == b"api"
    assert "SECRET" not in e and "NOTE" not in e
    assert (e["CONTAINER_STREAM"], e["PRIORITY"]) == (b"stdout", b"6")
    assert (by_message[b"oops"]["CONTAINER_STREAM"], by_message[b"oops"]["PRIORITY"]) == (
        b"stderr",
        b"3",
    )
