"""Whether the Kubernetes source runs here, and on which CRI socket ([kubernetes] enabled).

"auto" (the default) wants the pods directory and a CRI socket that answers at start; `true`
wants neither (the directory is watched for, the socket asked again and again, /readyz says
what is missing); `false` is off. Off is one info line, never an error: most hosts running the
bridge are not Kubernetes nodes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from bridge.config import Config, KubernetesConfig
from bridge.core.queue import PendingQueue
from bridge.core.state import ResumePoints
from bridge.sources.filters import ContainerFilter
from bridge.sources.handles import Readback
from bridge.sources.kubernetes.cri import CriClient, CriError
from bridge.sources.kubernetes.source import KubernetesSource
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)


def cri_answers(cfg: KubernetesConfig) -> str | None:
    """The first configured CRI socket that answers Version, or None."""
    for path in cfg.cri_sockets:
        if not os.path.exists(path):
            continue
        client = CriClient(path)
        try:
            client.version()
            return path
        except CriError:
            continue
        finally:
            client.close()
    return None


def kubernetes_source(
    cfg: KubernetesConfig,
    config: Callable[[], Config],
    queue_: PendingQueue,
    telemetry: Telemetry,
    points: ResumePoints,
    container_filter: Callable[[], ContainerFilter],
    readback: Callable[[str], Readback | None],
) -> KubernetesSource | None:
    """The source, if [kubernetes] turns it on here: "auto" wants the pods directory and a CRI
    socket that answers (else one info line); `true` wants the directory only."""
    if cfg.enabled is False:
        return None
    socket_path = cri_answers(cfg)
    if cfg.enabled == "auto" and (not os.path.isdir(cfg.pods_dir) or socket_path is None):
        missing = cfg.pods_dir if not os.path.isdir(cfg.pods_dir) else "no CRI socket answers"
        log.info("kubernetes: off (%s); set [kubernetes] enabled = true to force it", missing)
        return None
    if socket_path is None:  # watched all the same: the runtime may come up later
        existing = [p for p in cfg.cri_sockets if os.path.exists(p)]
        socket_path = (existing or list(cfg.cri_sockets))[0]
    return KubernetesSource(
        cfg, config, queue_, telemetry, points, container_filter, readback, socket_path
    )
