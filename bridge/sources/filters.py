"""Which containers are forwarded. Pure.

Order of decisions: the bridge's own container never; `journald-bridge.enable=false` never;
in opt-in mode only `journald-bridge.enable=true`; then excludes win over includes, and when
any include list is set a container must match one of them.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from bridge.config import FilterConfig
from bridge.core.fields import ContainerInfo

ENABLE_LABEL = "journald-bridge.enable"
_CONTAINER_ID = re.compile(r"/(?:docker/)?containers/([0-9a-f]{64})/")


class ContainerFilter:
    def __init__(self, config: FilterConfig, own_container_id: str | None = None) -> None:
        self._config = config
        self._own_id = own_container_id

    def reason_to_skip(self, info: ContainerInfo) -> str | None:
        """None when the container is forwarded, else a short reason for the log."""
        cfg = self._config
        if self._own_id and info.id.startswith(self._own_id):
            return "it is the bridge's own container"
        enable = info.labels.get(ENABLE_LABEL, "").strip().lower()
        if enable == "false":
            return f"label {ENABLE_LABEL}=false"
        if cfg.opt_in and enable != "true":
            return f"opt-in mode and no label {ENABLE_LABEL}=true"
        if _glob_any(info.name, cfg.exclude_names) or _glob_any(
            info.image_name, cfg.exclude_images
        ):
            return "excluded by name or image"
        if _labels_any(info.labels, cfg.exclude_labels):
            return "excluded by label"
        includes = (cfg.include_names, cfg.include_images, cfg.include_labels)
        if any(includes) and not (
            _glob_any(info.name, cfg.include_names)
            or _glob_any(info.image_name, cfg.include_images)
            or _labels_any(info.labels, cfg.include_labels)
        ):
            return "matches no include rule"
        return None


def _glob_any(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _labels_any(labels: Mapping[str, str], rules: Iterable[str]) -> bool:
    for rule in rules:
        key, sep, value = rule.partition("=")
        if key in labels and (not sep or labels[key] == value):
            return True
    return False


def own_container_id(mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The ID of the container this process runs in, if any (dockerd bind-mounts hostname etc.
    from /var/lib/docker/containers/<id>/ into every container)."""
    try:
        text = mountinfo.read_text()
    except OSError:
        return None
    match = _CONTAINER_ID.search(text)
    return match.group(1) if match else None
