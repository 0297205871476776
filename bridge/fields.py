"""Journal field names and the per-container fields, Docker-compatible. Pure.

`ContainerInfo` is what the bridge knows about a container (from inspect and events); `FieldSet`
turns it into the fixed fields every entry of that container carries, pre-encoded once so that
the hot path only concatenates bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bridge.native import encode_field

MAX_FIELD_NAME = 64

# Fields the bridge owns: no label, env var or parsed key may ever produce one of these.
FIXED_FIELDS = frozenset(
    {
        "MESSAGE",
        "MESSAGE_ID",
        "PRIORITY",
        "CONTAINER_ID",
        "CONTAINER_ID_FULL",
        "CONTAINER_NAME",
        "CONTAINER_TAG",
        "CONTAINER_STREAM",
        "CONTAINER_PARTIAL_MESSAGE",
        "CONTAINER_PARTIAL_ID",
        "CONTAINER_PARTIAL_ORDINAL",
        "CONTAINER_PARTIAL_LAST",
        "IMAGE_NAME",
        "SYSLOG_IDENTIFIER",
        "SYSLOG_TIMESTAMP",
        "SYSLOG_FACILITY",
        "SYSLOG_PID",
        "COMPOSE_PROJECT",
        "COMPOSE_SERVICE",
        "JOURNALD_BRIDGE_CURSOR",
    }
)
_FIXED_PREFIXES = ("CONTAINER_", "SYSLOG_", "JOURNALD_BRIDGE_")
_INVALID = re.compile(r"[^A-Z0-9_]")

COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"


def sanitize_field_name(key: str) -> str | None:
    """A journald-valid field name for a label, env or JSON key; None when nothing is left.

    Upper case, every other character to `_`, no leading `_` (trusted fields) or digit, at most
    64 characters -- stricter than Docker, whose driver lets journald drop such fields silently.
    """
    name = _INVALID.sub("_", key.upper()).lstrip("_0123456789")
    name = name[:MAX_FIELD_NAME].rstrip("_") if len(name) > MAX_FIELD_NAME else name
    return name or None


def is_protected(name: str) -> bool:
    """True for names a container must never set: fixed fields and the bridge's namespaces."""
    return name in FIXED_FIELDS or name.startswith(_FIXED_PREFIXES)


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image_name: str  # as the user gave it (Config.Image)
    image_id: str  # "sha256:..."
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    tty: bool = False
    log_driver: str = "json-file"
    created_ns: int = 0

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @classmethod
    def from_inspect(cls, data: Mapping[str, object], created_ns: int = 0) -> ContainerInfo:
        config = _mapping(data.get("Config"))
        host_config = _mapping(data.get("HostConfig"))
        env: dict[str, str] = {}
        raw_env = config.get("Env")
        for item in raw_env if isinstance(raw_env, list) else []:
            key, _, value = str(item).partition("=")
            env[key] = value
        labels = {str(k): str(v) for k, v in _mapping(config.get("Labels")).items()}
        return cls(
            id=str(data["Id"]),
            name=str(data.get("Name", "")).lstrip("/"),
            image_name=str(config.get("Image", "")),
            image_id=str(data.get("Image", "")),
            labels=labels,
            env=env,
            tty=bool(config.get("Tty")),
            log_driver=str(_mapping(host_config.get("LogConfig")).get("Type", "json-file")),
            created_ns=created_ns,
        )


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


_TEMPLATE_KEY = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")
_TEMPLATE_KEYS = frozenset(
    {"ID", "FullID", "Name", "ImageID", "ImageFullID", "ImageName", "DaemonName"}
)


class TagTemplate:
    """The subset of Docker's Go tag template that log tags use: `{{.Key}}` substitutions."""

    def __init__(self, template: str) -> None:
        unknown = sorted({m.group(1) for m in _TEMPLATE_KEY.finditer(template)} - _TEMPLATE_KEYS)
        if unknown:
            known = ", ".join(sorted(_TEMPLATE_KEYS))
            raise ValueError(f"unknown key {unknown[0]!r} in tag template (known: {known})")
        rest = _TEMPLATE_KEY.sub("", template)
        if "{{" in rest or "}}" in rest:
            raise ValueError(
                f"unsupported tag template {template!r}: only {{{{.Key}}}} is supported"
            )
        self.template = template

    def render(self, info: ContainerInfo) -> str:
        image_hex = info.image_id.split(":", 1)[-1]
        values = {
            "ID": info.short_id,
            "FullID": info.id,
            "Name": info.name,
            "ImageID": image_hex[:12],
            "ImageFullID": info.image_id,
            "ImageName": info.image_name,
            "DaemonName": "docker",
        }
        return _TEMPLATE_KEY.sub(lambda m: values[m.group(1)], self.template)


@dataclass(frozen=True)
class MetadataSelection:
    """Which labels and environment variables become fields (Docker's labels/env log-opts)."""

    labels: tuple[str, ...] = ()
    labels_regex: re.Pattern[str] | None = None
    env: tuple[str, ...] = ()
    env_regex: re.Pattern[str] | None = None

    def select(self, info: ContainerInfo) -> list[tuple[str, str]]:
        chosen: dict[str, str] = {}
        for source, names, pattern in (
            (info.labels, self.labels, self.labels_regex),
            (info.env, self.env, self.env_regex),
        ):
            for key, value in source.items():
                if key in names or (pattern is not None and pattern.search(key)):
                    name = sanitize_field_name(key)
                    if name is not None and not is_protected(name):
                        chosen.setdefault(name, value)
        return sorted(chosen.items())


def container_fields(
    info: ContainerInfo, tag: TagTemplate, selection: MetadataSelection
) -> list[tuple[str, str]]:
    """The fixed fields of every entry of this container, in a stable order."""
    rendered = tag.render(info)
    fields = [
        ("CONTAINER_ID", info.short_id),
        ("CONTAINER_ID_FULL", info.id),
        ("CONTAINER_NAME", info.name),
        ("CONTAINER_TAG", rendered),
        ("SYSLOG_IDENTIFIER", rendered),
        ("IMAGE_NAME", info.image_name),
    ]
    project = info.labels.get(COMPOSE_PROJECT_LABEL)
    service = info.labels.get(COMPOSE_SERVICE_LABEL)
    if project:
        fields.append(("COMPOSE_PROJECT", project))
    if service:
        fields.append(("COMPOSE_SERVICE", service))
    fields.extend(selection.select(info))
    return fields


def encode_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Native-protocol encoding of str fields."""
    return b"".join(encode_field(k.encode(), v.encode(errors="surrogateescape")) for k, v in pairs)
