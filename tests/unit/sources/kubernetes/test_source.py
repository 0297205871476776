"""KubernetesSource without a runtime: when it turns on, and a pod log read end to end with the
path's fields while no CRI socket answers (the watcher, KubeletFiles and FileReader real)."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry

from bridge.config import Config, KubernetesConfig
from bridge.core.queue import Batch, EndOfStream, PendingQueue
from bridge.core.state import State
from bridge.sources.filters import ContainerFilter
from bridge.sources.kubernetes.enable import kubernetes_source
from bridge.sources.kubernetes.source import KubernetesSource
from bridge.telemetry import Telemetry

UID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"


def make(cfg: KubernetesConfig, queue: PendingQueue, socket: str) -> KubernetesSource:
    config = Config.model_validate({"kubernetes": cfg.model_dump()})
    return KubernetesSource(
        cfg,
        lambda: config,
        queue,
        Telemetry(CollectorRegistry()),
        State(first_run_ns=0).points("kubernetes", 0),
        lambda: ContainerFilter(config.filter_for("kubernetes")),
        lambda engine: None,
        socket,
    )


def test_auto_is_off_without_the_pods_directory_or_an_answering_socket(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    args = (lambda: Config(), PendingQueue(1 << 20), Telemetry(CollectorRegistry()))
    points = State(first_run_ns=0).points("kubernetes", 0)
    no_dir = KubernetesConfig(pods_dir=str(tmp_path / "none"), cri_socket=str(tmp_path / "s"))
    assert kubernetes_source(no_dir, *args, points, lambda: None, lambda e: None) is None  # type: ignore[arg-type]
    assert "kubernetes: off" in caplog.text
    (tmp_path / "pods").mkdir()
    no_cri = KubernetesConfig(pods_dir=str(tmp_path / "pods"), cri_socket=str(tmp_path / "s"))
    assert kubernetes_source(no_cri, *args, points, lambda: None, lambda e: None) is None  # type: ignore[arg-type]
    off = KubernetesConfig(enabled=False, pods_dir=str(tmp_path / "pods"))
    assert kubernetes_source(off, *args, points, lambda: None, lambda e: None) is None  # type: ignore[arg-type]


def test_a_pod_log_is_read_with_the_paths_fields_while_no_cri_answers(tmp_path):
    pods = tmp_path / "pods"
    log = pods / f"shop_api-0_{UID}" / "web" / "0.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(
        b"2026-12-07T08:00:00.1Z stdout P hel\n2026-12-07T08:00:00.2Z stdout F lo\n"
        b"2026-12-07T08:00:00.3Z stderr F oops\n"
    )
    (pods / f"kube-system_dns_{UID}" / "dns").mkdir(parents=True)
    (pods / f"kube-system_dns_{UID}" / "dns" / "0.log").write_bytes(
        b"2026-12-07T08:00:00.1Z stdout F skipped\n"
    )
    queue = PendingQueue(1 << 20)
    cfg = KubernetesConfig(
        enabled=True, pods_dir=str(pods), node_name="n1", exclude_namespaces=("kube-*",)
    )
    source = make(cfg, queue, str(tmp_path / "no.sock"))
    source.start()
    try:
        assert source.started.wait(10)
        assert "does not answer" in (source.down_reason() or "")
        records = []
        deadline = time.monotonic() + 10
        while len(records) < 2 and time.monotonic() < deadline:
            for item in queue.get_many(0.2, 1 << 20):
                if isinstance(item, Batch):
                    records += item.records
                    handle = item.handle
        assert [(r.stream, r.message) for r in records] == [(1, b"hello"), (2, b"oops")]
        info = handle.info
        assert info.engine == "kubernetes" and len(info.id) == 64 and info.image_name == ""
        assert dict(info.source_fields)["KUBERNETES_NODE"] == "n1"
        assert source.attached == 1
        log.unlink()  # the kubelet removed the container: read to the end, then the end
        deadline = time.monotonic() + 10
        ended = False
        while not ended and time.monotonic() < deadline:
            ended = any(isinstance(i, EndOfStream) for i in queue.get_many(0.2, 1 << 20))
        assert ended
    finally:
        source.stop(5)
