"""What an engine's events said of a container: its metadata once the engine no longer knows it.

A `--rm` container can be removed before discovery gets to inspect it. dockerd's files keep its
config for a moment (logfiles' on_disk); Podman's do not (userdata/config.json has neither the
name nor the labels). But every container event of both carries the name, the image and the
labels in `Actor.Attributes`, so the last event of each container is remembered, and an
inspect-like answer is made from it for a container whose log file the bridge holds.

Invariants (attributes are the container's, and its image author's, to set):
- Only what would be used is kept: the name, the image, and the labels something reads (the
  bridge's own `journald-bridge.*`, compose's, `PODMAN_SYSTEMD_UNIT`, those `forward.labels`/
  `labels_regex` forward, those the engine's filter rules name), each key and value cut at
  MAX_VALUE characters.
- All entries together hold at most BUDGET_BYTES (measured as the objects' sizes), one at most
  ENTRY_BYTES; the oldest entries go first.
- An entry is forgotten once it has answered (the container's handle is built from it and
  its lines are read from then on), and when the container is destroyed (`forget`, run after
  the container's earlier tasks).
"""

from __future__ import annotations

import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bridge.config import Config
from bridge.core.fields import COMPOSE_LABELS
from bridge.core.units import UNIT_LABELS
from bridge.transforms.build import LABEL_PREFIX

BUDGET_BYTES = 8 << 20
ENTRY_BYTES = 64 << 10
MAX_ATTRIBUTES = 4096  # looked at per event, at most
MAX_VALUE = 4096
# What an entry holds beyond its strings (the id's key and node, the dict), and a dict slot.
_ENTRY_OVERHEAD = 400
_SLOT_OVERHEAD = 48
_KEPT = ("name", "image")
# Attributes that are the event's, not labels (Docker's and Podman's).
_NOT_LABELS = frozenset(
    {"exitCode", "containerExitCode", "signal", "podId", "execID", "execDuration"}
)


def used_labels(config: Config, engine: str) -> Callable[[str], bool]:
    """Whether anything would read a label of a container of `engine` under `config`."""
    fwd = config.forward
    flt = config.filter_for(engine)
    names = {*COMPOSE_LABELS, *UNIT_LABELS, *fwd.labels}
    names.update(rule.partition("=")[0] for rule in (*flt.include_labels, *flt.exclude_labels))
    pattern = re.compile(fwd.labels_regex) if fwd.labels_regex else None

    def used(key: str) -> bool:
        return (
            key in names
            or key.startswith(LABEL_PREFIX)
            or (pattern is not None and pattern.search(key) is not None)
        )

    return used


def _fixed(config: Config) -> Callable[[], Config]:
    return lambda: config


def _cost(key: str, value: str) -> int:
    return sys.getsizeof(key) + sys.getsizeof(value) + _SLOT_OVERHEAD


class EventMetadata:
    def __init__(self, config: Callable[[], Config] | None = None, engine: str = "docker") -> None:
        """`config` gives the current configuration (a reload changes what is kept)."""
        self._config = config if config is not None else _fixed(Config())
        self._engine = engine
        self._used_for: Config | None = None
        self._used: Callable[[str], bool] = lambda key: False
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[dict[str, str], int]] = OrderedDict()
        self.held_bytes = 0

    def remember(self, container_id: str, attributes: object) -> None:
        if not isinstance(attributes, dict) or not attributes.get("name"):
            return
        used = self._labels_used()
        kept: dict[str, str] = {}
        size = _ENTRY_OVERHEAD + sys.getsizeof(container_id)
        for k, v in list(attributes.items())[:MAX_ATTRIBUTES]:
            key = str(k)[:MAX_VALUE]
            if key in _KEPT or (key not in _NOT_LABELS and used(key)):
                value = str(v)[:MAX_VALUE]
                cost = _cost(key, value)
                if size + cost > ENTRY_BYTES:
                    continue  # a hostile number of used labels: the rest are left out
                kept[key] = value
                size += cost
        with self._lock:
            self._drop(container_id)
            self._seen[container_id] = (kept, size)
            self.held_bytes += size
            while self.held_bytes > BUDGET_BYTES:
                _, (_, oldest) = self._seen.popitem(last=False)
                self.held_bytes -= oldest

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._drop(container_id)

    def inspect_like(self, container_id: str) -> dict[str, Any] | None:
        """An answer shaped like the engine's inspect, for a stopped container; None if no
        event named it. The entry is forgotten: the container's handle is built from it."""
        with self._lock:
            attributes = self._drop(container_id)
        if attributes is None:
            return None
        labels = {k: v for k, v in attributes.items() if k not in _KEPT}
        return {
            "Id": container_id,
            "Name": "/" + attributes["name"],
            "Image": "",
            "Config": {"Image": attributes.get("image", ""), "Labels": labels},
            "State": {"Running": False, "FinishedAt": ""},
            "HostConfig": {"LogConfig": {"Type": "json-file"}},
        }

    def _drop(self, container_id: str) -> dict[str, str] | None:
        entry = self._seen.pop(container_id, None)
        if entry is None:
            return None
        self.held_bytes -= entry[1]
        return entry[0]

    def _labels_used(self) -> Callable[[str], bool]:
        config = self._config()
        if config is not self._used_for:
            self._used = used_labels(config, self._engine)
            self._used_for = config
        return self._used
