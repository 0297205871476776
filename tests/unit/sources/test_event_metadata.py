from __future__ import annotations

from bridge.core.fields import ContainerInfo
from bridge.sources.event_metadata import MAX_CONTAINERS, MAX_VALUE, EventMetadata


def test_a_removed_containers_metadata_comes_from_its_last_event():
    seen = EventMetadata()
    seen.remember(
        "c1",
        {"name": "web", "image": "nginx:1", "containerExitCode": "0", "app": "shop"},
    )
    info = ContainerInfo.from_inspect(seen.inspect_like("c1") or {}, engine="podman")
    assert (info.name, info.image_name, dict(info.labels)) == ("web", "nginx:1", {"app": "shop"})
    assert seen.inspect_like("c2") is None


def test_what_is_remembered_is_bounded():
    seen = EventMetadata()
    for n in range(MAX_CONTAINERS + 10):
        seen.remember(f"c{n}", {"name": f"n{n}", "big": "x" * (MAX_VALUE * 2)})
    assert seen.inspect_like("c0") is None  # the oldest went first
    newest = seen.inspect_like(f"c{MAX_CONTAINERS + 9}") or {}
    assert len(newest["Config"]["Labels"]["big"]) == MAX_VALUE
    for odd in (None, [], {"image": "no name"}, "text"):
        seen.remember("odd", odd)
    assert seen.inspect_like("odd") is None
