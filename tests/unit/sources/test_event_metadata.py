from __future__ import annotations

import tracemalloc

from bridge.config import Config, FilterConfig, ForwardConfig
from bridge.core.fields import ContainerInfo
from bridge.sources.event_metadata import (
    BUDGET_BYTES,
    ENTRY_BYTES,
    MAX_VALUE,
    EventMetadata,
    used_labels,
)


def test_a_removed_containers_metadata_comes_from_its_last_event():
    seen = EventMetadata()
    seen.remember(
        "c1",
        {
            "name": "web",
            "image": "nginx:1",
            "containerExitCode": "0",
            "com.docker.compose.service": "shop",
        },
    )
    info = ContainerInfo.from_inspect(seen.inspect_like("c1") or {}, engine="podman")
    assert (info.name, info.image_name) == ("web", "nginx:1")
    assert dict(info.labels) == {"com.docker.compose.service": "shop"}
    assert seen.inspect_like("c2") is None


def test_an_entry_is_forgotten_once_it_has_answered_or_its_container_is_destroyed():
    seen = EventMetadata()
    seen.remember("c1", {"name": "a"})
    seen.remember("c2", {"name": "b"})
    assert seen.inspect_like("c1") is not None
    assert seen.inspect_like("c1") is None  # the handle was built from it
    seen.forget("c2")
    assert seen.inspect_like("c2") is None
    assert seen.held_bytes == 0


def test_only_the_labels_something_reads_are_kept():
    config = Config(
        forward=ForwardConfig(labels=("team",), labels_regex="^org[.]keep[.]"),
        filter=FilterConfig(include_labels=("tier=web",), exclude_labels=("skip",)),
    )
    seen = EventMetadata(lambda: config)
    labels = {
        "team": "t",
        "org.keep.a": "1",
        "org.drop.b": "2",
        "tier": "web",
        "skip": "",
        "com.docker.compose.project": "p",
        "io.podman.compose.service": "s",
        "PODMAN_SYSTEMD_UNIT": "web.service",
        "journald-bridge.multiline": "python",
        "journald-bridge.enable": "true",
        "unrelated": "x" * 1000,
    }
    seen.remember("c1", {"name": "n", "image": "i", "exitCode": "1", **labels})
    kept = (seen.inspect_like("c1") or {})["Config"]["Labels"]
    assert kept == {k: v for k, v in labels.items() if k not in ("org.drop.b", "unrelated")}
    used = used_labels(Config(), "docker")
    assert used("journald-bridge.rate_limit") and not used("team")


def test_a_reload_changes_what_is_kept_from_then_on():
    configs = [Config(), Config(forward=ForwardConfig(labels=("team",)))]
    seen = EventMetadata(lambda: configs[0])
    seen.remember("c1", {"name": "a", "team": "t"})
    configs.pop(0)
    seen.remember("c2", {"name": "b", "team": "t"})
    assert (seen.inspect_like("c1") or {})["Config"]["Labels"] == {}
    assert (seen.inspect_like("c2") or {})["Config"]["Labels"] == {"team": "t"}


def _heavy(i: int) -> dict[str, str]:
    """What dockerd sends for a label-heavy image: 300 labels of 4 KiB keys and 5 KiB values
    (some not ASCII: a str then takes up to 4 bytes a character)."""
    attrs = {"name": f"job-{i}", "image": "ci/heavy:1"}
    for k in range(300):
        attrs[f"org.example.label{k:03d}." + "k" * 4070] = ("v" if k % 2 else "\U0001f600") * 5000
    return attrs


def _held(seen: EventMetadata, count: int) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            seen.remember(f"{i:064x}", _heavy(i))
        return tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def test_label_heavy_containers_cost_only_what_is_used():
    """r25: every attribute of the last event was kept, 2 MiB per such container."""
    held = _held(EventMetadata(), 32)
    assert held < 32 * 2048


def test_what_is_remembered_is_bounded_in_bytes_when_every_label_is_used():
    config = Config(forward=ForwardConfig(labels_regex="."))
    seen = EventMetadata(lambda: config)
    count = 2 * BUDGET_BYTES // ENTRY_BYTES  # twice what fits
    held = _held(seen, count)
    assert seen.held_bytes <= BUDGET_BYTES
    assert held <= BUDGET_BYTES * 1.1, held  # the measured size stays within the budget
    assert seen.inspect_like(f"{0:064x}") is None  # the oldest went first
    newest = seen.inspect_like(f"{count - 1:064x}") or {}
    labels = newest["Config"]["Labels"]
    assert labels and all(len(k) <= MAX_VALUE and len(v) <= MAX_VALUE for k, v in labels.items())
    for odd in (None, [], {"image": "no name"}, "text"):
        seen.remember("odd", odd)
    assert seen.inspect_like("odd") is None
