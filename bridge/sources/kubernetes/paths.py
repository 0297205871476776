"""Where the kubelet keeps pod logs, and what a path says about its container. Pure, no I/O.

    <pods_dir>/<namespace>_<pod>_<pod uid>/<container>/<restart count>.log

(kubelet pkg/kubelet/kuberuntime/helpers.go). Namespace and pod names are DNS subdomains and
container names DNS labels, so none holds a `_` and the split is unambiguous; the UID is a
UUID, or a static pod's manifest hash. Everything here comes from directory names that whoever
can write under the pods directory chooses: a name that does not fit the kubelet's rules is not
a pod log, and no field is made of it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SUBDOMAIN = r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
POD_DIR = re.compile(rf"({_SUBDOMAIN})_({_SUBDOMAIN})_([A-Za-z0-9-]{{1,64}})")
CONTAINER_DIR = re.compile(_LABEL)
LOG_NAME = re.compile(r"(0|[1-9][0-9]{0,8})\.log")
ROTATED_NAME = re.compile(r"((?:0|[1-9][0-9]{0,8})\.log)\.[0-9]{8}-[0-9]{6}")  # not .gz


@dataclass(frozen=True, slots=True)
class PodLog:
    """One container instance's log: a pod's container at one restart count."""

    namespace: str
    pod: str
    uid: str
    container: str
    restart: int

    @property
    def key(self) -> str:
        """`<pod dir>/<container>/<restart>.log`: its path under the pods directory."""
        return f"{self.namespace}_{self.pod}_{self.uid}/{self.container}/{self.restart}.log"

    @property
    def name(self) -> str:
        """CONTAINER_NAME: the name dockershim gave it, which CRI-O's conmon writes too."""
        return f"k8s_{self.container}_{self.pod}_{self.namespace}_{self.uid}_{self.restart}"

    @property
    def path_id(self) -> str:
        """A stable 64-hex ID for a container the runtime cannot name (its socket is down)."""
        return hashlib.sha256(self.key.encode()).hexdigest()


def pod_dir(name: str) -> tuple[str, str, str] | None:
    """(namespace, pod, uid) of a pod directory's name, or None."""
    match = POD_DIR.fullmatch(name)
    return (match.group(1), match.group(2), match.group(3)) if match else None


def parse(pod_directory: str, container: str, log_name: str) -> PodLog | None:
    """The container instance of `<pod_directory>/<container>/<log_name>`, or None."""
    pod = pod_dir(pod_directory)
    log = LOG_NAME.fullmatch(log_name)
    if pod is None or log is None or not CONTAINER_DIR.fullmatch(container):
        return None
    return PodLog(pod[0], pod[1], pod[2], container, int(log.group(1)))


def parse_key(key: str) -> PodLog | None:
    parts = key.split("/")
    return parse(*parts) if len(parts) == 3 else None
