"""What a pod log's entries wear: from its path, and from the runtime's CRI socket.

From the path (always): namespace, pod, pod UID, container, restart count. From CRI, when it
answers: the container's ID and image, the container's labels and annotations, and the pod's
(the kubelet copies every pod label and annotation onto the sandbox). Looked up once, when the
log is first seen, and kept with the log (`PodMetadata.cache`) until its reader is done: a pod
deleted right after it exited is gone from CRI about a second later, and its lines keep their
fields. A log first seen while CRI is down gets the path's fields and a path-derived ID
(`PodLog.path_id`); it is not looked up again, so its ID (its key in the state file and the
journal) never changes under it.

Fields: the Docker driver's names where they mean the same (CONTAINER_ID, CONTAINER_ID_FULL,
CONTAINER_NAME, IMAGE_NAME; SYSLOG_IDENTIFIER from the tag template), the rest under one prefix,
KUBERNETES_*. Labels and annotations are the pod's to choose: they reach an entry only through
the [forward] labels allow-list, sanitized and never as a field the bridge owns (fields.py).
"""

from __future__ import annotations

import logging
import re
import threading
import time

from bridge.core.fields import ContainerInfo
from bridge.sources.kubernetes import cri_api_pb2 as pb
from bridge.sources.kubernetes.cri import CriClient, CriError
from bridge.sources.kubernetes.paths import PodLog

log = logging.getLogger(__name__)

ENGINE = "kubernetes"
# The labels the kubelet puts on every container; set from the path too, so filters by
# namespace work whether or not CRI answered.
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_LABEL = "io.kubernetes.pod.name"
UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_LABEL = "io.kubernetes.container.name"
_ID = re.compile(r"[0-9a-f]{64}")
_MAX_VALUE = 4096  # a runtime's label, annotation or image name, cut to this


class PodMetadata:
    """Looks pod logs up in CRI and keeps what it found (thread-safe)."""

    def __init__(self, cri: CriClient, node: str) -> None:
        self._cri = cri
        self.node = node
        self._lock = threading.Lock()
        self.cache: dict[str, ContainerInfo] = {}
        self.cri_error = ""  # the last failure, "" once CRI answered again

    def info(self, pod_log: PodLog) -> ContainerInfo:
        """The log's ContainerInfo: cached, else looked up now (one or two CRI calls)."""
        with self._lock:
            cached = self.cache.get(pod_log.key)
        if cached is not None:
            return cached
        info = self._lookup(pod_log)
        with self._lock:
            return self.cache.setdefault(pod_log.key, info)

    def forget(self, key: str) -> None:
        with self._lock:
            self.cache.pop(key, None)

    def _lookup(self, pod_log: PodLog) -> ContainerInfo:
        container: pb.Container | None = None
        sandbox: pb.PodSandboxStatus | None = None
        try:
            container = self._container(pod_log)
            if container is not None and container.pod_sandbox_id:
                sandbox = self._cri.pod_status(container.pod_sandbox_id)
            self.cri_error = ""
        except CriError as exc:
            if str(exc) != self.cri_error:
                log.warning(
                    "kubernetes: CRI socket %s: %s; pod logs found meanwhile carry the path's "
                    "fields only",
                    self._cri.socket,
                    exc,
                )
            self.cri_error = str(exc)
        return build_info(pod_log, container, sandbox, self.node)

    def _container(self, pod_log: PodLog) -> pb.Container | None:
        selector = {UID_LABEL: pod_log.uid, CONTAINER_LABEL: pod_log.container}
        for c in self._cri.containers(selector):
            if c.metadata.attempt == pod_log.restart:
                return c
        return None

    def status(self, container_id: str) -> pb.ContainerStatus | None:
        """The runtime's word on a container; None when it cannot say. Raises CriError (not
        found: `CriError.not_found`)."""
        if not _ID.fullmatch(container_id):
            return None
        return self._cri.container_status(container_id)


def build_info(
    pod_log: PodLog,
    container: pb.Container | None,
    sandbox: pb.PodSandboxStatus | None,
    node: str,
) -> ContainerInfo:
    """The ContainerInfo of a pod log, from its path and what CRI said (pure)."""
    labels: dict[str, str] = {}
    if sandbox is not None:
        labels.update(_cut(sandbox.annotations))
        labels.update(_cut(sandbox.labels))
    if container is not None:
        labels.update(_cut(container.annotations))
        labels.update(_cut(container.labels))
    labels.update(
        {
            NAMESPACE_LABEL: pod_log.namespace,
            POD_LABEL: pod_log.pod,
            UID_LABEL: pod_log.uid,
            CONTAINER_LABEL: pod_log.container,
        }
    )
    cid = container.id if container is not None and _ID.fullmatch(container.id) else ""
    image = container.image.image[:_MAX_VALUE] if container is not None else ""
    created = container.created_at if container is not None and container.created_at > 0 else 0
    fields = [
        ("KUBERNETES_NAMESPACE", pod_log.namespace),
        ("KUBERNETES_POD_NAME", pod_log.pod),
        ("KUBERNETES_POD_UID", pod_log.uid),
        ("KUBERNETES_CONTAINER_NAME", pod_log.container),
        ("KUBERNETES_RESTART_COUNT", str(pod_log.restart)),
    ]
    if node:
        fields.append(("KUBERNETES_NODE", node))
    return ContainerInfo(
        id=cid or pod_log.path_id,
        name=pod_log.name,
        image_name=image,
        image_id=container.image_ref[:_MAX_VALUE] if container is not None else "",
        labels=labels,
        log_driver="k8s-file",
        created_ns=created or time.time_ns(),
        engine=ENGINE,
        source_fields=tuple(fields),
    )


def _cut(mapping: object) -> dict[str, str]:
    items = mapping.items() if hasattr(mapping, "items") else ()
    return {str(k)[:_MAX_VALUE]: str(v)[:_MAX_VALUE] for k, v in items}
