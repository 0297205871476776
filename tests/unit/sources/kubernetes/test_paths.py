"""Pod log paths: what the kubelet writes parses; what it cannot write is not a pod log."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.sources.kubernetes.paths import PodLog, parse, parse_key

UID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"


def test_a_kubelet_path_parses():
    log = parse(f"shop_api-0_{UID}", "web", "3.log")
    assert log == PodLog("shop", "api-0", UID, "web", 3)
    assert log.key == f"shop_api-0_{UID}/web/3.log"
    assert log.name == f"k8s_web_api-0_shop_{UID}_3"
    assert parse_key(log.key) == log
    assert len(log.path_id) == 64 and log.path_id == parse_key(log.key).path_id


def test_a_static_pods_hash_uid_and_dotted_names():
    assert parse("kube-system_etcd-node.example_3a7f9e0c", "etcd", "0.log") is not None


@pytest.mark.parametrize(
    ("pod_dir", "container", "name"),
    [
        (f"shop_api_0_{UID}", "web", "0.log"),  # four parts: a name with "_"
        (f"Shop_api-0_{UID}", "web", "0.log"),  # upper case is no DNS name
        (f"shop_api-0_{UID}", "Web", "0.log"),
        (f"shop_api-0_{UID}", "web", "01.log"),
        (f"shop_api-0_{UID}", "web", "0.log.20261207-080000"),  # rotated: not a current log
        (f"shop_api-0_{UID}", "web", "0.log.tmp"),
        (f"shop_api-0_{UID}", "..", "0.log"),
        (f"shop_api-0_{UID}", "web", "../0.log"),
        (f"shop_api-0_{UID}\n", "web", "0.log"),
        (f"shop_api-0_{'a' * 65}", "web", "0.log"),
        (f"shop_-api_{UID}", "web", "0.log"),
    ],
)
def test_what_the_kubelet_cannot_write_is_not_a_pod_log(pod_dir, container, name):
    assert parse(pod_dir, container, name) is None


@given(st.text(max_size=80), st.text(max_size=70), st.text(max_size=20))
def test_any_name_parses_to_fields_without_separators_or_control_characters(a, b, c):
    log = parse(a, b, c)
    if log is not None:
        for value in (log.namespace, log.pod, log.uid, log.container):
            assert value and value.isascii() and value.isprintable()
            assert "_" not in value and "/" not in value


def test_parse_key_wants_three_parts():
    assert parse_key(f"shop_api-0_{UID}/web") is None
    assert parse_key(f"x/shop_api-0_{UID}/web/0.log") is None
