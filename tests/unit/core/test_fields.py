from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.fields import (
    MAX_CONTAINER_FIELD_BYTES,
    MAX_CONTAINER_FIELDS,
    ContainerInfo,
    MetadataSelection,
    TagTemplate,
    container_fields,
    container_fields_counted,
    encode_pairs,
    is_protected,
    sanitize_field_name,
    utf8,
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
        "CONTAINER_ENGINE": "docker",
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


@pytest.mark.parametrize(
    "name",
    ["_PID", "_SYSTEMD_UNIT", "OBJECT_PID", "OBJECT_SYSTEMD_UNIT", "COREDUMP_UNIT", "UNIT",
     "USER_UNIT", "CONTAINER_ID_FULL", "CONTAINER_STREAM", "SYSLOG_TIMESTAMP",
     "JOURNALD_BRIDGE_CURSOR", "JOURNALD_BRIDGE_ANYTHING"],
)  # fmt: skip
def test_fields_journald_or_readers_trust_are_protected(name):
    """r18: a container could set OBJECT_SYSTEMD_UNIT, which journalctl -u trusts for UID 0."""
    assert is_protected(name)


@pytest.mark.parametrize("name", ["TEAM", "UNITS", "MY_UNIT", "OBJECTIVE", "COREDUMPS"])
def test_near_misses_are_not_protected(name):
    assert not is_protected(name)


def wide(n: int, value: str = "v") -> ContainerInfo:
    labels = {f"app.l{i:05}": value for i in range(n)}
    return ContainerInfo("a" * 64, "web", "img", "sha256:" + "b" * 64, labels=labels)


ALL_APP = MetadataSelection(labels_regex=re.compile(r"^app\."))


def test_selected_labels_are_capped_in_number_and_the_rest_counted():
    """r15: 2,011 fields on every entry."""
    fields, dropped = ALL_APP.select_counted(wide(2000))
    assert len(fields) == MAX_CONTAINER_FIELDS and fields[0] == ("APP_L00000", "v")
    assert dropped == {"count": 2000 - MAX_CONTAINER_FIELDS}
    assert ALL_APP.select(wide(2000)) == fields


def test_selected_labels_are_capped_in_bytes_and_the_rest_counted():
    info = wide(3, "x" * 20000)  # two would be 40 KB
    fields, dropped = ALL_APP.select_counted(info)
    assert [name for name, _ in fields] == ["APP_L00000"] and dropped == {"bytes": 2}


def test_compose_labels_share_the_byte_budget():
    labels = {
        "com.docker.compose.project": "p" * (5 << 20),
        "com.docker.compose.service": "s",
        "app.big": "x" * (5 << 20),
        "app.small": "y",
    }
    info = ContainerInfo("a" * 64, "web", "img", "sha256:" + "b" * 64, labels=labels)
    fields, dropped = container_fields_counted(info, TagTemplate("{{.Name}}"), ALL_APP)
    names = [name for name, _ in fields]
    assert "COMPOSE_PROJECT" not in names and {"COMPOSE_SERVICE", "APP_SMALL"} <= set(names)
    assert dropped == {"bytes": 2}
    assert len(encode_pairs(fields)) < 2 * MAX_CONTAINER_FIELD_BYTES
    assert container_fields(info, TagTemplate("{{.Name}}"), ALL_APP) == fields


@given(
    st.dictionaries(
        st.text(max_size=70), st.text(st.characters(exclude_categories=()), max_size=300)
    ),
    st.dictionaries(st.text(max_size=70), st.text(max_size=3000), max_size=80),
)
def test_whatever_the_labels_and_env_the_fields_are_bounded_valid_and_unprotected(labels, env):
    info = ContainerInfo("a" * 64, "web", "img", "sha256:" + "b" * 64, labels=labels, env=env)
    selection = MetadataSelection(labels_regex=re.compile(""), env_regex=re.compile(""))
    selected, dropped = selection.select_counted(info)
    assert len(selected) <= MAX_CONTAINER_FIELDS
    assert sum(len(n) + len(utf8(v)) for n, v in selected) <= MAX_CONTAINER_FIELD_BYTES
    assert set(dropped) <= {"count", "bytes"} and all(n > 0 for n in dropped.values())
    assert all(VALID.match(n) and not is_protected(n) for n, _ in selected)
    encode_pairs(container_fields(info, TagTemplate("{{.Name}}"), selection))


def test_text_with_lone_surrogates_encodes():
    assert utf8("a\ud800b\udcff") == "a\ufffdb\ufffd".encode()
    assert encode_pairs([("K", "\ud800")]) == "K=\ufffd\n".encode()


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


def test_a_remote_engines_entries_name_it_and_its_host():
    info = ContainerInfo("b" * 64, "api", "img", "sha256:c", engine="edge", engine_host="host-7")
    fields = dict(container_fields(info, TagTemplate("{{.Name}}"), MetadataSelection()))
    assert fields["CONTAINER_ENGINE"] == "edge"
    assert fields["CONTAINER_ENGINE_HOST"] == "host-7"


def test_podman_compose_labels_fill_the_compose_fields():
    labels = {"io.podman.compose.project": "shop", "io.podman.compose.service": "db"}
    info = ContainerInfo("b" * 64, "db", "img", "sha256:c", labels=labels, engine="podman")
    fields = dict(container_fields(info, TagTemplate("{{.Name}}"), MetadataSelection()))
    assert (fields["COMPOSE_PROJECT"], fields["COMPOSE_SERVICE"]) == ("shop", "db")


def test_no_label_or_variable_can_forge_the_resume_cursor_the_read_back_uses():
    """The read-back trusts JOURNALD_BRIDGE_CURSOR over SYSLOG_TIMESTAMP: a container that could
    set it would steer its own resume (skip or repeat lines after a clock step)."""
    forged = {
        "JOURNALD_BRIDGE_CURSOR": "99999999999999999:1:1:0:1",
        "journald-bridge.cursor": "1:1",
        "journald_bridge_cursor": "1:1",
        "SYSLOG_TIMESTAMP": "2000-01-01T00:00:00Z",
    }
    info = ContainerInfo("a" * 64, "web", "img", "sha256:" + "b" * 64, labels=forged, env=forged)
    selection = MetadataSelection(labels_regex=re.compile(""), env_regex=re.compile(""))
    names = {n for n, _ in container_fields(info, TagTemplate("{{.Name}}"), selection)}
    assert "JOURNALD_BRIDGE_CURSOR" not in names and "SYSLOG_TIMESTAMP" not in names
