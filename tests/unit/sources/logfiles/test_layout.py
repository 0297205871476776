"""Where each engine keeps a container's log, and in which format."""

from __future__ import annotations

import pytest

from bridge.sources.logfiles.formats.jsonfile import JSON_FILE
from bridge.sources.logfiles.formats.k8sfile import K8S_FILE
from bridge.sources.logfiles.formats.local import LOCAL
from bridge.sources.logfiles.layout import DOCKER, for_engine, podman

CID = "ab" * 32


def test_docker():
    root = "/var/lib/docker"
    assert DOCKER.path(root, CID, "json-file") == f"{root}/containers/{CID}/{CID}-json.log"
    assert DOCKER.path(root, CID, "local") == f"{root}/containers/{CID}/local-logs/container.log"
    assert DOCKER.path(root, CID, "journald") is None
    assert DOCKER.format("json-file") is JSON_FILE and DOCKER.format("local") is LOCAL
    assert DOCKER.format("k8s-file") is None
    assert DOCKER.log_name(CID, sub=False) == f"{CID}-json.log"
    assert not DOCKER.replaced and DOCKER.config_files


def test_podman_whose_compat_api_calls_k8s_file_json_file():
    root = "/var/lib/containers/storage"
    ctr_log = f"{root}/overlay-containers/{CID}/userdata/ctr.log"
    layout = podman()
    for driver in ("json-file", "k8s-file"):
        assert layout.path(root, CID, driver) == ctr_log
        assert layout.format(driver) is K8S_FILE
    for driver in ("journald", "none", "passthrough", "local"):
        assert layout.path(root, CID, driver) is None and layout.format(driver) is None
    assert layout.log_name(CID, sub=False) is None and layout.log_name(CID, sub=True) == "ctr.log"
    assert layout.replaced and layout.config_files == ()


def test_for_engine_takes_podmans_storage_driver_from_its_info():
    assert for_engine("docker", {"Driver": "overlay2"}) is DOCKER
    assert for_engine("podman", {"Driver": "vfs"}).containers == "vfs-containers"
    assert for_engine("podman", {}).containers == "overlay-containers"
    for bad in ("../etc", "overlay/..", "", "x" * 40):
        with pytest.raises(ValueError):
            podman(bad)
    with pytest.raises(ValueError):
        for_engine("containerd", {})
