"""Journal field names and the per-container fields, Docker-compatible. Pure.

`ContainerInfo` is what the bridge knows about a container (from inspect and events);
`container_fields` turns it into the fixed fields every entry of that container carries,
pre-encoded once so that the hot path only concatenates bytes. An engine container's unit
(CONTAINER_SYSTEMD_UNIT) is checked in core/units.py.

Labels, environment and JSON keys are the container's to choose, so:
- a name they produce is sanitized and never `is_protected` (trusted `_*` fields, the fields
  journalctl trusts for `-u` and coredumps, the bridge's own and the ones it reads back);
- what one container's labels and environment add to every entry is capped at
  MAX_CONTAINER_FIELDS fields and MAX_CONTAINER_FIELD_BYTES bytes, and what the caps leave off
  is counted (`select_counted`), by reason ("count" or "bytes");
- text is encoded with `utf8`, which never raises (lone surrogates become U+FFFD).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bridge.core.units import NO_UNIT, UNIT_FIELD, UnitClaim, unit_claim

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
        "CONTAINER_ENGINE",
        "CONTAINER_ENGINE_HOST",
        UNIT_FIELD,
    }
)
# INNER_*: an inner journal's fields (inner_journal/fields.py); KUBERNETES_*: the Kubernetes
# source's (sources/kubernetes/metadata.py); never a label's, a pod annotation's or a JSON key's.
_FIXED_PREFIXES = ("CONTAINER_", "SYSLOG_", "JOURNALD_BRIDGE_", "INNER_", "KUBERNETES_")
# Fields journalctl and coredumpctl trust when the entry's trusted fields say who sent it
# (`journalctl -u` matches UNIT/OBJECT_SYSTEMD_UNIT/COREDUMP_UNIT), and journald's own (`_*`).
_TRUSTED_BY_READERS = frozenset({"UNIT", "USER_UNIT", "INVOCATION_ID", "USER_INVOCATION_ID"})
_TRUSTED_PREFIXES = ("_", "OBJECT_", "COREDUMP_")
_PROTECTED_PREFIXES = _FIXED_PREFIXES + _TRUSTED_PREFIXES
_INVALID = re.compile(r"[^A-Z0-9_]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# What one container's selected labels and environment add to every one of its entries.
MAX_CONTAINER_FIELDS = 64
MAX_CONTAINER_FIELD_BYTES = 32 << 10  # names and values together

COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
# podman-compose sets these next to the Docker ones; either one fills COMPOSE_*.
_PODMAN_PROJECT_LABEL = "io.podman.compose.project"
_PODMAN_SERVICE_LABEL = "io.podman.compose.service"
COMPOSE_LABELS = (
    COMPOSE_PROJECT_LABEL,
    COMPOSE_SERVICE_LABEL,
    _PODMAN_PROJECT_LABEL,
    _PODMAN_SERVICE_LABEL,
)


def sanitize_field_name(key: str) -> str | None:
    """A journald-valid field name for a label, env or JSON key; None when nothing is left.

    Upper case, every other character to `_`, no leading `_` (trusted fields) or digit, at most
    64 characters -- stricter than Docker, whose driver lets journald drop such fields silently.
    """
    name = _INVALID.sub("_", key.upper()).lstrip("_0123456789")
    name = name[:MAX_FIELD_NAME].rstrip("_") if len(name) > MAX_FIELD_NAME else name
    return name or None


def is_protected(name: str) -> bool:
    """True for names a container must never set.

    The bridge's fixed fields and namespaces (including what it reads back at start-up:
    CONTAINER_ID_FULL, CONTAINER_STREAM, SYSLOG_TIMESTAMP, JOURNALD_BRIDGE_*), journald's trusted
    `_*` fields, and the fields readers trust (UNIT, USER_UNIT, OBJECT_*, COREDUMP_*, ...).
    """
    return (
        name in FIXED_FIELDS or name in _TRUSTED_BY_READERS or name.startswith(_PROTECTED_PREFIXES)
    )


def utf8(text: str) -> bytes:
    """UTF-8 for the journal; never raises: a lone surrogate (JSON "\\ud800") becomes U+FFFD."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


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
    engine: str = "docker"  # the configured engine's name: CONTAINER_ENGINE
    engine_host: str = ""  # a remote engine's host name (its /info Name), else ""
    # The source's own fields, after CONTAINER_ENGINE (KUBERNETES_*): names it owns, never a
    # label's; values checked by the source.
    source_fields: tuple[tuple[str, str], ...] = ()
    # The systemd unit its labels say runs it (CONTAINER_SYSTEMD_UNIT); engine containers only.
    unit: UnitClaim = NO_UNIT

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @classmethod
    def from_inspect(
        cls,
        data: Mapping[str, object],
        created_ns: int = 0,
        *,
        engine: str = "docker",
        engine_host: str = "",
    ) -> ContainerInfo:
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
            engine=engine,
            engine_host=engine_host,
            unit=unit_claim(labels),
        )

    @property
    def compose_project(self) -> str:
        return self.labels.get(COMPOSE_PROJECT_LABEL) or self.labels.get(_PODMAN_PROJECT_LABEL, "")

    @property
    def compose_service(self) -> str:
        return self.labels.get(COMPOSE_SERVICE_LABEL) or self.labels.get(_PODMAN_SERVICE_LABEL, "")


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
        return self.select_counted(info)[0]

    def select_counted(
        self, info: ContainerInfo, budget: int = MAX_CONTAINER_FIELD_BYTES
    ) -> tuple[list[tuple[str, str]], dict[str, int]]:
        """The selected fields, sorted by name and capped, and what the caps left off.

        At most MAX_CONTAINER_FIELDS fields (the first by name; "count") whose names and values
        take at most `budget` bytes (a field that does not fit is left off whole; "bytes").
        """
        chosen: dict[str, str] = {}
        for source, names, pattern in (
            (info.labels, self.labels, self.labels_regex),
            (info.env, self.env, self.env_regex),
        ):
            if not names and pattern is None:
                continue
            for key, value in source.items():
                if key in names or (pattern is not None and pattern.search(key)):
                    name = sanitize_field_name(key)
                    if name is not None and not is_protected(name):
                        chosen.setdefault(name, value)
        fields = sorted(chosen.items())
        dropped: dict[str, int] = {}
        if len(fields) > MAX_CONTAINER_FIELDS:
            dropped["count"] = len(fields) - MAX_CONTAINER_FIELDS
            del fields[MAX_CONTAINER_FIELDS:]
        kept, over = _within_budget(fields, budget)
        if over:
            dropped["bytes"] = over
        return kept, dropped


def _within_budget(fields: list[tuple[str, str]], budget: int) -> tuple[list[tuple[str, str]], int]:
    kept: list[tuple[str, str]] = []
    over = 0
    for name, value in fields:
        size = len(name) + len(utf8(value)) if len(value) <= budget else budget + 1
        if size <= budget:
            kept.append((name, value))
            budget -= size
        else:
            over += 1
    return kept, over


def container_fields(
    info: ContainerInfo, tag: TagTemplate, selection: MetadataSelection
) -> list[tuple[str, str]]:
    """The fixed fields of every entry of this container, in a stable order."""
    return container_fields_counted(info, tag, selection)[0]


def container_fields_counted(
    info: ContainerInfo, tag: TagTemplate, selection: MetadataSelection
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """`container_fields`, and how many fields the caps left off, by reason ("count", "bytes").

    The compose labels and the selected labels and environment share one byte budget,
    MAX_CONTAINER_FIELD_BYTES: the compose labels are a container's to set too.
    """
    rendered = tag.render(info)
    fields = [
        ("CONTAINER_ID", info.short_id),
        ("CONTAINER_ID_FULL", info.id),
        ("CONTAINER_NAME", info.name),
        ("CONTAINER_TAG", rendered),
        ("SYSLOG_IDENTIFIER", rendered),
        ("IMAGE_NAME", info.image_name),
        ("CONTAINER_ENGINE", info.engine),
    ]
    if info.engine_host:
        fields.append(("CONTAINER_ENGINE_HOST", info.engine_host))
    if info.unit.name:
        fields.append((UNIT_FIELD, info.unit.name))
    fields.extend(info.source_fields)
    compose = [
        (name, value)
        for name, value in (
            ("COMPOSE_PROJECT", info.compose_project),
            ("COMPOSE_SERVICE", info.compose_service),
        )
        if value
    ]
    kept, over = _within_budget(compose, MAX_CONTAINER_FIELD_BYTES)
    fields.extend(kept)
    used = sum(len(name) + len(utf8(value)) for name, value in kept)
    selected, dropped = selection.select_counted(info, MAX_CONTAINER_FIELD_BYTES - used)
    fields.extend(selected)
    if over:
        dropped["bytes"] = dropped.get("bytes", 0) + over
    return fields, dropped


def encode_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Native-protocol encoding of str fields."""
    return b"".join(encode_field(utf8(k), utf8(v)) for k, v in pairs)


# journald's native protocol for one field: `NAME=value\n`, or, when the value holds a newline,
# `NAME\n` + little-endian u64 length + raw bytes + `\n`.
def encode_field(name: bytes, value: bytes) -> bytes:
    if b"\n" in value:
        return name + b"\n" + len(value).to_bytes(8, "little") + value + b"\n"
    return name + b"=" + value + b"\n"
