"""Pod logs through the bridge, on a real containerd writing CRI files and an emulated kubelet:
fields, labels, P/F joining across a reopen, exit mid-line, deleted pods, restarts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from ..conftest import Bridge, Journald, wait_until
from .conftest import CriRuntime, k8s_bridge
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


def test_a_line_split_across_a_reopen_a_40000_byte_line_and_printf_at_exit_are_one_entry_each(
    bridge: Bridge, journald: Journald, kubelet: Kubelet
):
    k8s_bridge(bridge, kubelet).start()
    pod = kubelet.run_pod("pieces", "shop")
    script = (
        "printf 'before '; sleep 1.5; printf 'after\\n'; "
        "yes a | head -c 80000 | tr -d '\\n'; echo; printf x"
    )
    c = kubelet.start(pod, "main", script)
    time.sleep(0.7)
    kubelet.rotate_now(c, 5)  # containerd flushes "before " as P into the renamed file
    kubelet.wait_exited(c)
    wait_until(
        lambda: (e := journald.entries(KUBERNETES_POD_NAME="pieces")) and len(e) >= 3 and e,
        30,
        "three entries",
    )
    time.sleep(1)
    entries = journald.entries(KUBERNETES_POD_NAME="pieces")
    assert [e["MESSAGE"] for e in entries] == [b"before after", b"a" * 40000, b"x"]
    assert {e["CONTAINER_ID_FULL"] for e in entries} == {c.id.encode()}
    assert kubelet.rotations == 1


def test_a_pod_deleted_right_after_it_exits_keeps_every_line_and_its_fields(
    bridge: Bridge, journald: Journald, kubelet: Kubelet
):
    k8s_bridge(bridge, kubelet).start()
    pod = kubelet.run_pod("job-1", "batch", labels={"job-name": "job"})
    c = kubelet.start(pod, "work", "seq 1 5000")
    kubelet.wait_exited(c)
    # The kubelet learns of the exit at its next relist (every second), then removes the
    # containers of a deleted pod with their files and CRI records at once.
    time.sleep(1)
    kubelet.delete_pod(pod)
    messages = journald.wait_messages(c.id, 5000, 60)
    time.sleep(1)
    entries = journald.entries(CONTAINER_ID_FULL=c.id)
    assert [int(e["MESSAGE"]) for e in entries] == list(range(1, 5001))
    assert {e["KUBERNETES_POD_NAME"] for e in entries} == {b"job-1"}
    assert {e["IMAGE_NAME"] for e in entries} == {b"docker.io/bridge-test/busybox:latest"}
    assert len(messages) == 5000


def test_a_restarted_container_writes_1_log_with_its_restart_count(
    bridge: Bridge, journald: Journald, kubelet: Kubelet
):
    k8s_bridge(bridge, kubelet).start()
    pod = kubelet.run_pod("web-0", "shop")
    first = kubelet.start(pod, "web", "echo first")
    kubelet.wait_exited(first)
    second = kubelet.start(pod, "web", "echo second", attempt=1)
    kubelet.wait_exited(second)
    assert second.log_path.endswith("/web/1.log")
    (e0,) = journald.wait_for_line(first.id, b"first", 30)
    (e1,) = journald.wait_for_line(second.id, b"second", 30)
    assert (e0["KUBERNETES_RESTART_COUNT"], e1["KUBERNETES_RESTART_COUNT"]) == (b"0", b"1")
    assert e1["CONTAINER_NAME"] == f"k8s_web_web-0_shop_{pod.uid}_1".encode()


def test_50_short_lived_pods_started_at_once_every_line(
    bridge: Bridge, journald: Journald, kubelet: Kubelet
):
    k8s_bridge(bridge, kubelet).start()
    pods = [kubelet.run_pod(f"cron-{i}", "batch") for i in range(50)]
    containers = [kubelet.start(p, "job", f"seq 1 100; echo done-{i}") for i, p in enumerate(pods)]
    for c in containers:
        kubelet.wait_exited(c)
    for p in pods:
        kubelet.delete_pod(p)
    for i, c in enumerate(containers):
        messages = journald.wait_messages(c.id, 101, 60)
        assert messages == [str(n).encode() for n in range(1, 101)] + [f"done-{i}".encode()]


def test_the_cri_socket_stopped_and_started_again(
    bridge: Bridge, journald: Journald, kubelet: Kubelet, cri_runtime: CriRuntime
):
    k8s_bridge(bridge, kubelet).start()
    pod = kubelet.run_pod("before", "shop")
    c = kubelet.start(pod, "main", "echo up")
    kubelet.wait_exited(c)
    journald.wait_for_line(c.id, b"up", 30)
    cri_runtime.stop()
    try:
        reason = wait_until(
            lambda: (r := bridge.get("/readyz"))[0] != 200 and r[1], 20, "/readyz to say"
        )
        assert "CRI socket" in reason and "containerd.sock" in reason
        # A log written meanwhile (here by hand: containerd is down) flows with the path's
        # fields and a path-derived ID.
        directory = Path(kubelet.pods_dir) / f"shop_orphan_{uuid.uuid4()}" / "main"
        directory.mkdir(parents=True)
        (directory / "0.log").write_bytes(b"2026-12-07T08:00:00.1Z stdout F while down\n")
        (entry,) = wait_until(
            lambda: journald.entries(KUBERNETES_POD_NAME="orphan"), 30, "the orphan's line"
        )
        assert entry["MESSAGE"] == b"while down"
        assert entry["KUBERNETES_NAMESPACE"] == b"shop" and entry["IMAGE_NAME"] == b""
    finally:
        cri_runtime.start()
    wait_until(lambda: bridge.get("/readyz")[0] == 200, 30, "/readyz to recover")
    pod = kubelet.run_pod("after", "shop")
    c = kubelet.start(pod, "main", "echo back")
    kubelet.wait_exited(c)
    (e,) = journald.wait_for_line(c.id, b"back", 30)
    assert e["IMAGE_NAME"] == b"docker.io/bridge-test/busybox:latest"


def test_transforms_rate_limits_and_metrics_apply_to_pods_as_to_containers(
    bridge: Bridge, journald: Journald, kubelet: Kubelet
):
    k8s_bridge(bridge, kubelet)
    bridge.configure(
        transforms={"rate_limit_lines_per_second": 50, "rate_limit_burst": 50, "parse_json": True},
        metrics={"per_container": True},
    )
    bridge.start()
    pod = kubelet.run_pod("noisy", "shop")
    c = kubelet.start(
        pod, "main", 'echo \'{"msg": "structured", "level": "error"}\'; seq 1 2000; echo end'
    )
    kubelet.wait_exited(c)
    name = f"k8s_main_noisy_shop_{pod.uid}_0"
    wait_until(
        lambda: (
            bridge.metric(
                "journald_bridge_container_lines_dropped_total",
                engine="kubernetes",
                container_name=name,
                reason="rate_limited",
            )
            > 1000
        ),
        30,
        "lines dropped by the rate limit",
    )
    entries = journald.entries(CONTAINER_ID_FULL=c.id)
    assert entries[0]["MESSAGE"] == b"structured" and entries[0]["PRIORITY"] == b"3"
    assert len(entries) < 200
    assert (
        bridge.metric("journald_bridge_container_attach_total", engine="kubernetes", source="files")
        == 1
    )
