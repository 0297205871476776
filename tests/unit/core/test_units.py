from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.fields import (
    ContainerInfo,
    MetadataSelection,
    TagTemplate,
    container_fields,
    is_protected,
)
from bridge.core.units import MAX_UNIT_NAME, UNIT_FIELD, UnitClaim, unit_claim

UNIT_CHARS = re.compile(r"[A-Za-z0-9:_.\\@-]+")


@pytest.mark.parametrize(
    "name",
    ["web.service", "app@1.service", "podman-web.scope", r"a\x2db.service", "x:y_z.service"],
)
def test_a_valid_unit_name_is_taken(name):
    assert unit_claim({"PODMAN_SYSTEMD_UNIT": name}) == UnitClaim("PODMAN_SYSTEMD_UNIT", name)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "web",  # no type
        "web.service\nUNIT=sshd.service",  # a second field smuggled in
        "web.bogus",
        ".service",
        "app@.service",  # a template, not an instance
        "a@b@c.service",
        "wéb.service",
        "web .service",
        "a" * MAX_UNIT_NAME + ".service",
    ],
)
def test_anything_else_is_refused_with_a_reason(value):
    claim = unit_claim({"journald-bridge.unit": value})
    assert claim.name == "" and claim.refused and claim.label == "journald-bridge.unit"
    assert "\n" not in claim.refused


def test_the_bridge_label_wins_over_podmans():
    labels = {"PODMAN_SYSTEMD_UNIT": "a.service", "journald-bridge.unit": "b.service"}
    assert unit_claim(labels).name == "b.service"
    assert unit_claim({}) == UnitClaim()


@given(st.text(max_size=300))
def test_a_claim_is_the_label_exactly_or_nothing(value):
    claim = unit_claim({"PODMAN_SYSTEMD_UNIT": value})
    assert (claim.name == "") != (claim.refused == "")
    if claim.name:
        assert claim.name == value and UNIT_CHARS.fullmatch(value) and len(value) <= 255


def info(labels: dict[str, str]) -> ContainerInfo:
    data = {"Id": "c" * 64, "Name": "/web", "Config": {"Image": "i", "Labels": labels}}
    return ContainerInfo.from_inspect(data, engine="podman")


def fields(labels: dict[str, str], selection: MetadataSelection | None = None) -> dict[str, str]:
    pairs = container_fields(
        info(labels), TagTemplate("{{.Name}}"), selection or MetadataSelection()
    )
    assert len({name for name, _ in pairs}) == len(pairs)
    return dict(pairs)


def test_an_engine_container_carries_its_unit():
    assert fields({"PODMAN_SYSTEMD_UNIT": "web.service"})[UNIT_FIELD] == "web.service"
    assert UNIT_FIELD not in fields({"PODMAN_SYSTEMD_UNIT": "web"})
    assert UNIT_FIELD not in fields({})


def test_no_label_forwarded_as_a_field_can_set_the_unit_or_what_journalctl_trusts():
    assert is_protected(UNIT_FIELD)
    labels = {
        "container_systemd_unit": "sshd.service",
        "_SYSTEMD_UNIT": "sshd.service",
        "UNIT": "sshd.service",
        "OBJECT_SYSTEMD_UNIT": "sshd.service",
        "PODMAN_SYSTEMD_UNIT": "web.service",
    }
    got = fields(labels, MetadataSelection(labels_regex=re.compile(".")))
    assert got[UNIT_FIELD] == "web.service"
    assert {"_SYSTEMD_UNIT", "UNIT", "OBJECT_SYSTEMD_UNIT"}.isdisjoint(got)
    assert got["PODMAN_SYSTEMD_UNIT"] == "web.service"  # forwarded as asked, harmless


def test_only_an_engine_container_is_looked_at():
    """A pod's labels (the Kubernetes source builds its ContainerInfo itself) name no unit."""
    pod = ContainerInfo(id="p" * 64, name="web", image_name="i", image_id="", labels={})
    labelled = ContainerInfo(
        id="p" * 64,
        name="web",
        image_name="i",
        image_id="",
        labels={"PODMAN_SYSTEMD_UNIT": "web.service"},
    )
    for info in (pod, labelled):
        assert info.unit == UnitClaim()
        pairs = container_fields(info, TagTemplate("{{.Name}}"), MetadataSelection())
        assert UNIT_FIELD not in dict(pairs)
