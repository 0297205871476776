from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.fields import (
    ContainerInfo,
    MetadataSelection,
    TagTemplate,
    container_fields,
    is_protected,
    sanitize_field_name,
)

VALID = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


@given(st.text(max_size=200))
def test_sanitized_names_are_always_valid_journal_fields(key):
    name = sanitize_field_name(key)
    assert name is None or VALID.match(name)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("com.example.team", "COM_EXAMPLE_TEAM"),
        ("_PID", "PID"),
        ("9lives", "LIVES"),
        ("...", None),
        ("a" * 80, "A" * 64),
    ],
)
def test_sanitizer_examples(key, name):
    assert sanitize_field_name(key) == name


INFO = ContainerInfo(
    id="a" * 64,
    name="web",
    image_name="nginx:1",
    image_id="sha256:" + "b" * 64,
    labels={
        "com.docker.compose.project": "shop",
        "com.docker.compose.service": "front",
        "team": "core",
        "container_name": "evil",
    },
    env={"LANG": "C", "SECRET": "x"},
)


def test_tag_template_keys():
    tpl = TagTemplate(
        "{{.Name}}/{{.ID}}/{{ .ImageName }}/{{.ImageID}}/{{.FullID}}/{{.ImageFullID}}"
    )
    assert tpl.render(INFO) == f"web/{'a' * 12}/nginx:1/{'b' * 12}/{'a' * 64}/sha256:{'b' * 64}"


@pytest.mark.parametrize("bad", ["{{.Nope}}", "{{if .Name}}x{{end}}"])
def test_tag_template_rejects_what_it_cannot_render(bad):
    with pytest.raises(ValueError):
        TagTemplate(bad)


def test_container_fields_are_docker_compatible_and_labels_cannot_overwrite_them():
    selection = MetadataSelection(labels=("team", "container_name"), env_regex=re.compile("^LANG$"))
    fields = dict(container_fields(INFO, TagTemplate("{{.Name}}"), selection))
    assert fields == {
        "CONTAINER_ID": "a" * 12,
        "CONTAINER_ID_FULL": "a" * 64,
        "CONTAINER_NAME": "web",
        "CONTAINER_TAG": "web",
        "SYSLOG_IDENTIFIER": "web",
        "IMAGE_NAME": "nginx:1",
        "COMPOSE_PROJECT": "shop",
        "COMPOSE_SERVICE": "front",
        "TEAM": "core",
        "LANG": "C",
    }


def test_protected_names():
    assert (
        is_protected("CONTAINER_NAME")
        and is_protected("SYSLOG_ANYTHING")
        and is_protected("PRIORITY")
    )
    assert not is_protected("TEAM")


def test_from_inspect():
    info = ContainerInfo.from_inspect(
        {
            "Id": "c" * 64,
            "Name": "/api",
            "Image": "sha256:" + "d" * 64,
            "Config": {
                "Image": "api:2",
                "Env": ["A=1", "B=x=y"],
                "Labels": {"k": "v"},
                "Tty": True,
            },
            "HostConfig": {"LogConfig": {"Type": "local"}},
        }
    )
    assert (info.name, info.image_name, info.env, info.tty, info.log_driver) == (
        "api",
        "api:2",
        {"A": "1", "B": "x=y"},
        True,
        "local",
    )
