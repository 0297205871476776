"""A pod log's ContainerInfo and fields: from the path, and from CRI's (hostile) labels."""

from __future__ import annotations

from bridge.core.fields import MetadataSelection, TagTemplate, container_fields
from bridge.sources.kubernetes import cri_api_pb2 as pb
from bridge.sources.kubernetes.metadata import ENGINE, build_info
from bridge.sources.kubernetes.paths import PodLog

UID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
CID = "ab" * 32
LOG = PodLog("shop", "api-0", UID, "web", 2)


def container(**labels: str) -> pb.Container:
    return pb.Container(
        id=CID,
        pod_sandbox_id="sb",
        metadata=pb.ContainerMetadata(name="web", attempt=2),
        image=pb.ImageSpec(image="registry.example/api:1.2"),
        image_ref="sha256:" + "cd" * 32,
        created_at=1_700_000_000_000_000_000,
        labels={"io.kubernetes.container.name": "web", **labels},
        annotations={"io.kubernetes.container.restartCount": "2"},
    )


def sandbox(labels: dict[str, str], annotations: dict[str, str]) -> pb.PodSandboxStatus:
    return pb.PodSandboxStatus(id="sb", labels=labels, annotations=annotations)


def fields(info, labels=()):
    return dict(container_fields(info, TagTemplate("{{.Name}}"), MetadataSelection(labels=labels)))


def test_fields_from_the_path_and_cri():
    info = build_info(LOG, container(), sandbox({"app": "api"}, {"team": "core"}), "node-1")
    assert info.id == CID and info.engine == ENGINE
    f = fields(info, ("app", "team"))
    assert f["CONTAINER_ID"] == CID[:12]
    assert f["CONTAINER_ID_FULL"] == CID
    assert f["CONTAINER_NAME"] == f["SYSLOG_IDENTIFIER"] == f"k8s_web_api-0_shop_{UID}_2"
    assert f["IMAGE_NAME"] == "registry.example/api:1.2"
    assert f["CONTAINER_ENGINE"] == "kubernetes"
    assert (f["KUBERNETES_NAMESPACE"], f["KUBERNETES_POD_NAME"], f["KUBERNETES_POD_UID"]) == (
        "shop",
        "api-0",
        UID,
    )
    assert (f["KUBERNETES_CONTAINER_NAME"], f["KUBERNETES_RESTART_COUNT"]) == ("web", "2")
    assert f["KUBERNETES_NODE"] == "node-1"
    assert (f["APP"], f["TEAM"]) == ("api", "core")  # pod labels and annotations, allowed


def test_without_cri_the_path_gives_the_fields_and_a_stable_id():
    info = build_info(LOG, None, None, "")
    f = fields(info)
    assert info.id == LOG.path_id and f["IMAGE_NAME"] == ""
    assert f["KUBERNETES_POD_NAME"] == "api-0" and "KUBERNETES_NODE" not in f
    assert info.labels["io.kubernetes.pod.namespace"] == "shop"  # filters by namespace work


def test_pod_labels_and_annotations_never_set_a_field_the_bridge_owns():
    hostile = {
        "kubernetes.namespace": "forged",  # -> KUBERNETES_NAMESPACE: protected
        "container_id_full": "0" * 64,  # read back by the journal read-back
        "_uid": "0",
        "syslog.identifier": "sshd",
        "io.kubernetes.pod.namespace": "forged",  # the path's word wins
    }
    info = build_info(LOG, container(**hostile), sandbox(hostile, hostile), "n")
    f = fields(info, tuple(hostile))
    assert f["KUBERNETES_NAMESPACE"] == "shop"
    assert f["CONTAINER_ID_FULL"] == CID
    assert f["SYSLOG_IDENTIFIER"] == f"k8s_web_api-0_shop_{UID}_2"
    assert "_UID" not in f  # ("UID" is an ordinary name once the "_" is stripped)
    assert info.labels["io.kubernetes.pod.namespace"] == "shop"


def test_a_runtime_id_that_is_not_64_hex_is_not_used():
    c = container()
    c.id = "../../x"
    assert build_info(LOG, c, None, "").id == LOG.path_id


def test_huge_values_are_cut():
    info = build_info(LOG, container(big="x" * 100_000), None, "")
    assert len(info.labels["big"]) == 4096
