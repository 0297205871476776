from __future__ import annotations

import pytest

from bridge.config import FilterConfig
from bridge.core.fields import ContainerInfo
from bridge.sources.filters import ContainerFilter, own_container_id


def info(name="web", image="nginx:1", labels=None, cid="a" * 64):
    return ContainerInfo(
        id=cid, name=name, image_name=image, image_id="sha256:x", labels=labels or {}
    )


@pytest.mark.parametrize(
    ("config", "container", "forwarded"),
    [
        (FilterConfig(), info(), True),
        (FilterConfig(), info(labels={"journald-bridge.enable": "false"}), False),
        (FilterConfig(opt_in=True), info(), False),
        (FilterConfig(opt_in=True), info(labels={"journald-bridge.enable": "true"}), True),
        (FilterConfig(exclude_names=("w*",)), info(), False),
        (FilterConfig(include_names=("api-*",)), info(), False),
        (FilterConfig(include_names=("api-*",)), info(name="api-1"), True),
        (
            FilterConfig(include_images=("nginx:*",), exclude_labels=("tmp",)),
            info(labels={"tmp": ""}),
            False,
        ),
        (FilterConfig(include_labels=("tier=front",)), info(labels={"tier": "front"}), True),
        (FilterConfig(include_labels=("tier=front",)), info(labels={"tier": "back"}), False),
    ],
)
def test_decisions(config, container, forwarded):
    assert (ContainerFilter(config).reason_to_skip(container) is None) is forwarded


def test_never_its_own_container(tmp_path):
    cid = "f" * 64
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"1 2 0:1 /var/lib/docker/containers/{cid}/hostname /etc/hostname rw\n")
    assert own_container_id(mountinfo) == cid
    assert ContainerFilter(FilterConfig(), cid).reason_to_skip(info(cid=cid)) is not None
    assert own_container_id(tmp_path / "absent") is None
