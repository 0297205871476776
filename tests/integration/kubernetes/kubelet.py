"""An emulated kubelet over a real containerd's CRI socket: pods, their log files, rotation.

The kubelet's side of pod logging is file work plus CRI calls, so this drives the real CRI log
writer (containerd's) and reproduces the kubelet's file work step by step
(pkg/kubelet/kuberuntime, pkg/kubelet/logs/container_log_manager.go, as summarised in
shared/reference/kubernetes-nodes.md): the pod and container directories before CreateContainer,
`<restart>.log`, the /var/log/containers-style symlink, rotation by rename then
ReopenContainerLog (rename back on failure), gzip of older rotated files through `.tmp`,
MaxFiles, and deletion of a removed container's files.

One difference, on purpose: the kubelet's rotated names have one-second resolution and a
second rotation within the same second would rename over the first; `rotate` skips instead
(the kubelet's 10 s monitor interval never meets that).
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.sources.kubernetes import cri_api_pb2 as pb
from bridge.sources.kubernetes.cri import CriClient, CriError

IMAGE = "docker.io/bridge-test/busybox:latest"
CGROUP_PARENT = "/journald-bridge-cri-test"


@dataclass
class Container:
    name: str
    id: str
    attempt: int
    log_path: str


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str
    sandbox_id: str
    config: pb.PodSandboxConfig
    directory: str
    containers: dict[str, Container] = field(default_factory=dict)


class Kubelet:
    def __init__(self, cri: CriClient, pods_dir: str, links_dir: str) -> None:
        self.cri = cri
        self.pods_dir = pods_dir
        self.links_dir = links_dir
        self.pods: list[Pod] = []
        self._rotator: threading.Thread | None = None
        self._stop = threading.Event()
        self.rotations = 0
        self.failed_reopens = 0

    # --- pods -----------------------------------------------------------------------------

    def run_pod(
        self,
        name: str,
        namespace: str = "default",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> Pod:
        uid = str(uuid.uuid4())
        directory = os.path.join(self.pods_dir, f"{namespace}_{name}_{uid}")
        os.makedirs(directory, mode=0o755, exist_ok=True)
        pod_labels = {
            **(labels or {}),
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.uid": uid,
        }
        node = pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace),
            log_directory=directory,
            labels=pod_labels,
            annotations=annotations or {},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=CGROUP_PARENT,
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=node),
            ),
        )
        sandbox = self.cri.call(
            "RunPodSandbox", pb.RunPodSandboxRequest(config=config), pb.RunPodSandboxResponse, 60
        ).pod_sandbox_id
        pod = Pod(namespace, name, uid, sandbox, config, directory)
        self.pods.append(pod)
        return pod

    def start(self, pod: Pod, container: str, script: str, attempt: int = 0) -> Container:
        """Creates and starts `container` running `sh -c script`, as attempt `attempt`."""
        os.makedirs(os.path.join(pod.directory, container), mode=0o755, exist_ok=True)
        log_path = os.path.join(container, f"{attempt}.log")
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=container, attempt=attempt),
            image=pb.ImageSpec(image=IMAGE),
            command=["/bin/sh", "-c", script],
            labels={
                "io.kubernetes.container.name": container,
                "io.kubernetes.pod.name": pod.name,
                "io.kubernetes.pod.namespace": pod.namespace,
                "io.kubernetes.pod.uid": pod.uid,
            },
            annotations={"io.kubernetes.container.restartCount": str(attempt)},
            log_path=log_path,
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER)
                )
            ),
        )
        request = pb.CreateContainerRequest(
            pod_sandbox_id=pod.sandbox_id, config=cfg, sandbox_config=pod.config
        )
        cid = self.cri.call("CreateContainer", request, pb.CreateContainerResponse, 60).container_id
        self.cri.call(
            "StartContainer",
            pb.StartContainerRequest(container_id=cid),
            pb.StartContainerResponse,
            60,
        )
        full = os.path.join(pod.directory, log_path)
        link = os.path.join(
            self.links_dir, f"{pod.name}_{pod.namespace}_{container}-{cid}.log"[:255]
        )
        with contextlib.suppress(OSError):
            os.symlink(full, link)
        pod.containers[container] = Container(container, cid, attempt, full)
        return pod.containers[container]

    def wait_exited(self, container: Container, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.cri.container_status(container.id).state == pb.CONTAINER_EXITED:
                return
            time.sleep(0.05)
        raise TimeoutError(f"container {container.name} still runs")

    def remove_container(self, pod: Pod, container: Container) -> None:
        """kubelet's removal: RemoveContainer, then unlink `<log>*` and the symlink."""
        with contextlib.suppress(CriError):
            self.cri.call(
                "RemoveContainer",
                pb.RemoveContainerRequest(container_id=container.id),
                pb.RemoveContainerResponse,
                60,
            )
        for path in glob.glob(glob.escape(container.log_path) + "*"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for link in glob.glob(os.path.join(self.links_dir, f"*-{container.id}.log")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)

    def delete_pod(self, pod: Pod) -> None:
        """A deleted pod: stop, remove every container with its files, the sandbox, the dir."""
        with contextlib.suppress(CriError):
            self.cri.call(
                "StopPodSandbox",
                pb.StopPodSandboxRequest(pod_sandbox_id=pod.sandbox_id),
                pb.StopPodSandboxResponse,
                60,
            )
        for container in list(pod.containers.values()):
            self.remove_container(pod, container)
        with contextlib.suppress(CriError):
            self.cri.call(
                "RemovePodSandbox",
                pb.RemovePodSandboxRequest(pod_sandbox_id=pod.sandbox_id),
                pb.RemovePodSandboxResponse,
                60,
            )
        shutil.rmtree(pod.directory, ignore_errors=True)
        if pod in self.pods:
            self.pods.remove(pod)

    def close(self) -> None:
        self.stop_rotating()
        for pod in list(self.pods):
            self.delete_pod(pod)

    # --- rotation (container_log_manager.go rotateLog) -----------------------------------------

    def rotate(
        self, container: Container, max_files: int, between: Callable[[], object] | None = None
    ) -> bool:
        """One rotation of a running container's log, step by step; False if skipped (or the
        reopen failed). `between` runs after the rename, before the reopen."""
        log = container.log_path
        rotated = f"{log}.{time.strftime('%Y%m%d-%H%M%S')}"
        if os.path.exists(rotated) or os.path.exists(rotated + ".gz"):
            return False  # same second as the last one (see the module docstring)
        others = sorted(glob.glob(glob.escape(log) + ".*"))
        for path in others:  # leftovers: .tmp, and plain files that already have their .gz
            if path.endswith(".tmp") or (not path.endswith(".gz") and path + ".gz" in others):
                os.unlink(path)
        others = sorted(p for p in glob.glob(glob.escape(log) + ".*") if not p.endswith(".tmp"))
        while len(others) > max_files - 2:
            os.unlink(others.pop(0))
        for path in others:
            if not path.endswith(".gz"):
                with (
                    open(path, "rb") as src,
                    open(path + ".tmp", "wb") as tmp,
                    gzip.GzipFile(fileobj=tmp, mode="wb") as gz,
                ):
                    shutil.copyfileobj(src, gz)
                os.rename(path + ".tmp", path + ".gz")
                os.unlink(path)
        os.rename(log, rotated)
        if between is not None:
            between()
        try:
            self.cri.call(
                "ReopenContainerLog",
                pb.ReopenContainerLogRequest(container_id=container.id),
                pb.ReopenContainerLogResponse,
                30,
            )
        except CriError:
            os.rename(rotated, log)  # "if kubelet gets restarted at this point, we lose it"
            self.failed_reopens += 1
            return False
        self.rotations += 1
        return True

    def rotate_now(self, container: Container, max_files: int, **kw: Any) -> None:
        """One rotation now (within a second or two: names have one-second resolution)."""
        deadline = time.monotonic() + 10
        while not self.rotate(container, max_files, **kw):
            if time.monotonic() > deadline:
                raise TimeoutError("no rotation")
            time.sleep(0.1)

    def rotate_while_running(
        self, container: Container, max_size: int, max_files: int, interval: float = 0.05
    ) -> None:
        """Rotates in the background whenever the log passes max_size, until it exits."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    status = self.cri.container_status(container.id)
                    if status.state != pb.CONTAINER_RUNNING:
                        return
                    if os.stat(container.log_path).st_size >= max_size:
                        self.rotate(container, max_files)
                except (CriError, FileNotFoundError):
                    continue

        self._stop.clear()
        self._rotator = threading.Thread(target=loop, daemon=True)
        self._rotator.start()

    def stop_rotating(self) -> None:
        self._stop.set()
        if self._rotator is not None:
            self._rotator.join(30)
            self._rotator = None
