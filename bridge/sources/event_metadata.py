"""What an engine's events said of a container: its metadata once the engine no longer knows it.

A `--rm` container can be removed before discovery gets to inspect it. dockerd's files keep its
config for a moment (logfiles' on_disk); Podman's do not (userdata/config.json has neither the
name nor the labels). But every container event of both carries the name, the image and the
labels in `Actor.Attributes`, so the last event of each container is remembered, and an
inspect-like answer is made from it for a container whose log file the bridge holds.

Bounded: the newest MAX_CONTAINERS containers, each with at most MAX_ATTRIBUTES attributes of
at most MAX_VALUE characters (they are the container's to set).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

MAX_CONTAINERS = 4096
MAX_ATTRIBUTES = 256
MAX_VALUE = 4096
# Attributes that are the event's, not labels (Docker's and Podman's).
_NOT_LABELS = frozenset(
    {"name", "image", "exitCode", "containerExitCode", "signal", "podId", "execID", "execDuration"}
)


class EventMetadata:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, dict[str, str]] = OrderedDict()

    def remember(self, container_id: str, attributes: object) -> None:
        if not isinstance(attributes, dict) or not attributes.get("name"):
            return
        kept = {
            str(k)[:MAX_VALUE]: str(v)[:MAX_VALUE]
            for k, v in list(attributes.items())[:MAX_ATTRIBUTES]
        }
        with self._lock:
            self._seen[container_id] = kept
            self._seen.move_to_end(container_id)
            while len(self._seen) > MAX_CONTAINERS:
                self._seen.popitem(last=False)

    def inspect_like(self, container_id: str) -> dict[str, Any] | None:
        """An answer shaped like the engine's inspect, for a stopped container; None if no
        event named it."""
        with self._lock:
            attributes = self._seen.get(container_id)
        if attributes is None:
            return None
        labels = {k: v for k, v in attributes.items() if k not in _NOT_LABELS}
        return {
            "Id": container_id,
            "Name": "/" + attributes["name"],
            "Image": "",
            "Config": {"Image": attributes.get("image", ""), "Labels": labels},
            "State": {"Running": False, "FinishedAt": ""},
            "HostConfig": {"LogConfig": {"Type": "json-file"}},
        }
