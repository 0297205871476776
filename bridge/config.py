"""Typed configuration, loaded and validated in one place.

A TOML file, then environment overrides `JOURNALD_BRIDGE_<SECTION>__<KEY>=value` (values are
parsed as TOML scalars or arrays, falling back to plain strings). Unknown keys are errors. Any
error is reported as one line naming the key path, and the process exits with EX_CONFIG (78).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.core.fields import TagTemplate
from bridge.core.state import DEFAULT_ENGINE  # the [docker] section's engine

EX_CONFIG = 78
ENV_PREFIX = "JOURNALD_BRIDGE_"
KUBERNETES_SOURCE = "kubernetes"  # the Kubernetes source's engine name (state, metrics, fields)


class ConfigError(Exception):
    """A configuration that cannot be used; str() is the one-line message."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_regex(value: str, *, as_bytes: bool = False) -> str:
    """`value` if it compiles (on its UTF-8 bytes with `as_bytes`), else a one-line ValueError.

    Compiling fails in more ways than re.error: RecursionError (deep nesting), OverflowError
    (a huge repeat count), UnicodeEncodeError (a lone surrogate from the environment).
    """
    if value:
        try:
            re.compile(value.encode() if as_bytes else value)
        except Exception as exc:
            shown = value if len(value) <= 80 else value[:80] + "..."
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(f"invalid regular expression {shown!r}: {reason}") from None
    return value


ENGINE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class FilterConfig(_Section):
    opt_in: bool = False  # forward only containers labelled journald-bridge.enable=true
    include_names: tuple[str, ...] = ()
    exclude_names: tuple[str, ...] = ()
    include_images: tuple[str, ...] = ()
    exclude_images: tuple[str, ...] = ()
    include_labels: tuple[str, ...] = ()
    exclude_labels: tuple[str, ...] = ()


class EngineSettings(_Section):
    """What every engine has, the [docker] section and each [[engines]] table alike."""

    host: str = ""
    # Where lines are read: the engine's log files ("files", local engines only), the Engine
    # API stream ("api"), or files where readable and the API otherwise ("auto").
    source: Literal["auto", "files", "api"] = "auto"
    # TLS for a tcp:// engine, as docker's own --tlscacert/--tlscert/--tlskey/--tlsverify.
    # Under the systemd unit, hand the files over with LoadCredential= (README).
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_verify: bool = True
    reconnect_max_seconds: Annotated[float, Field(gt=0, le=300)] = 30.0
    # How often to list containers as a safety net: engines drop events for a subscriber
    # that falls behind, and a missed start event would leave a container unread.
    resync_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # This engine's containers are chosen by this table instead of [filter] (replaced whole,
    # not merged: one place says what an engine forwards).
    filter: FilterConfig | None = None

    @model_validator(mode="after")
    def _files_need_a_local_engine(self) -> EngineSettings:
        if self.source == "files" and not self.local:
            raise ValueError(f"source = 'files' needs a local engine, not {self.host!r}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, key)
            if path and not os.access(path, os.R_OK):
                raise ValueError(f"{key} {path!r} cannot be read")
        if self.tls and self.local:
            raise ValueError("TLS options are for a tcp:// engine")
        return self

    @property
    def effective_host(self) -> str:
        return self.host or os.environ.get("DOCKER_HOST", "")

    @property
    def local(self) -> bool:
        """Whether the engine runs on this host (its files can be read here)."""
        host = self.effective_host
        return not host or host.startswith("unix://")

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca_file or self.tls_cert_file)


class DockerConfig(EngineSettings):
    """The default engine, named `docker`: the [docker] section, as before engines existed."""

    enabled: bool = True  # false on a host with Podman only


class EngineConfig(EngineSettings):
    """One [[engines]] table."""

    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # It is a field value (CONTAINER_ENGINE), a metric label and a state key.
        if not ENGINE_NAME.fullmatch(value):
            raise ValueError(
                f"must be 1-32 of a-z, 0-9, '_' and '-', starting with a letter, not {value!r}"
            )
        return value

    @classmethod
    def from_docker(cls, docker: DockerConfig) -> EngineConfig:
        return cls(name=DEFAULT_ENGINE, **docker.model_dump(exclude={"enabled"}))


class JournalConfig(_Section):
    socket: str = "/run/systemd/journal/socket"
    namespace: str = ""  # journal namespace to read back resume points from, if socket is one
    send_buffer_bytes: Annotated[int, Field(ge=65536, le=1 << 30)] = 8 << 20
    max_pending_bytes: Annotated[int, Field(ge=1 << 20, le=1 << 34)] = 64 << 20
    resume_from_journal: bool = True
    sync_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0


class StateConfig(_Section):
    directory: str = "/var/lib/journald-bridge"
    flush_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0


class ForwardConfig(_Section):
    backlog: str = "none"  # none | all | a number of lines
    tag: str = "{{.Name}}"
    max_line_bytes: Annotated[int, Field(ge=16384, le=64 << 20)] = 1 << 20
    # The disk that rotated log files held open unread may take, per engine, all containers
    # together (an engine's deleted file held open keeps its space).
    max_held_log_bytes: Annotated[int, Field(ge=1 << 20, le=1 << 40)] = 1 << 30
    labels: tuple[str, ...] = ()
    labels_regex: str = ""
    env: tuple[str, ...] = ()
    env_regex: str = ""
    skip_journald_driver: bool = True

    @field_validator("backlog", mode="before")
    @classmethod
    def _backlog(cls, value: object) -> str:
        # A number of lines may come as an integer (TOML, or JOURNALD_BRIDGE_FORWARD__BACKLOG).
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"must be 'none', 'all' or a number of lines, not {value!r}")
        if value in ("none", "all") or (value.isdigit() and int(value) >= 0):
            return value
        raise ValueError(f"must be 'none', 'all' or a number of lines, not {value!r}")

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        TagTemplate(value)
        return value

    @field_validator("labels_regex", "env_regex")
    @classmethod
    def _regex(cls, value: str) -> str:
        return _check_regex(value)

    @property
    def backlog_lines(self) -> int | None:
        """None for all, 0 for none, else the number of lines."""
        if self.backlog == "all":
            return None
        return 0 if self.backlog == "none" else int(self.backlog)


class MetricsConfig(_Section):
    """The status endpoint. TLS and basic auth, as in Prometheus's exporter web config, are off
    by default; each is on when its keys are set, and its files are read at validation, so an
    unreadable or mismatched file is a config error rather than a start-up failure."""

    enabled: bool = True
    listen: str = "127.0.0.1:9580"  # HOST:PORT; HOST an IP address or a name, IPv6 in brackets
    per_container: bool = False
    tls_cert_file: str = ""  # PEM certificate (chain); with tls_key_file, serve HTTPS only
    tls_key_file: str = ""  # PEM private key, unencrypted
    basic_auth_user: str = ""  # with basic_auth_password_file: /metrics and /readyz need it
    basic_auth_password_file: str = ""  # the password, trailing line breaks aside

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        import ipaddress

        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"must be HOST:PORT, not {value!r}")
        if host.startswith("[") and host.endswith("]"):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise ValueError(f"brackets are for IPv6 addresses only, not {value!r}") from None
        elif ":" in host:
            raise ValueError(f"an IPv6 address goes in brackets ([::1]:9580), not {value!r}")
        elif re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{host!r} is not an IPv4 address") from None
        elif len(host) > 253 or not all(
            re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label)
            for label in host.removesuffix(".").split(".")
        ):
            raise ValueError(f"HOST must be an IP address or a host name, not {host!r}")
        return value

    @field_validator("basic_auth_user")
    @classmethod
    def _user(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("a basic auth user name cannot contain ':'")
        return value

    @model_validator(mode="after")
    def _tls_and_auth(self) -> MetricsConfig:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if bool(self.basic_auth_user) != bool(self.basic_auth_password_file):
            raise ValueError(
                "basic_auth_user and basic_auth_password_file go together: set both or neither"
            )
        if self.tls_cert_file:
            import ssl

            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                    self.tls_cert_file, self.tls_key_file
                )
            except OSError as exc:  # ssl.SSLError included
                reason = exc.strerror or getattr(exc, "reason", None) or exc
                raise ValueError(
                    f"cannot use tls_cert_file {self.tls_cert_file!r} with tls_key_file "
                    f"{self.tls_key_file!r}: {reason}"
                ) from None
        if self.basic_auth_user and not self.basic_auth_password():
            raise ValueError(f"basic_auth_password_file {self.basic_auth_password_file!r} is empty")
        return self

    def basic_auth_password(self) -> str:
        """The password in basic_auth_password_file, without trailing line breaks."""
        try:
            with open(self.basic_auth_password_file, encoding="utf-8") as file:
                return file.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ValueError(
                f"cannot read basic_auth_password_file {self.basic_auth_password_file!r}: {reason}"
            ) from None

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.removeprefix("[").removesuffix("]"), int(port)

    @property
    def url(self) -> str:
        """Where /metrics is, for the start-up log line."""
        return f"{'https' if self.tls_cert_file else 'http'}://{self.listen}/metrics"


class TransformsConfig(_Section):
    multiline: str = ""  # "" (off), "python", "java" or "custom" (the two patterns below)
    multiline_start: str = ""
    multiline_continue: str = ""
    multiline_flush_ms: Annotated[int, Field(ge=1, le=60000)] = 500
    # An open record is also closed at this many lines (and at forward.max_line_bytes).
    multiline_max_lines: Annotated[int, Field(ge=2, le=100000)] = 500
    parse_json: bool = False
    json_message_keys: tuple[str, ...] = ("msg", "message")
    json_level_keys: tuple[str, ...] = ("level", "severity", "lvl")
    json_field_prefix: str = ""
    detect_priority_prefix: bool = False
    detect_level_words: bool = False
    rate_limit_lines_per_second: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    rate_limit_burst: Annotated[int, Field(ge=0, le=1 << 40)] = 0  # 0: one second's worth
    rate_limit_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # The options a container's label journald-bridge.<option> may set; the default is every
    # one of them. A label may only lower rate_limit / rate_limit_burst below the values above,
    # and its multiline patterns run through RE2 (linear time), never Python's re.
    label_overrides: tuple[str, ...] = (
        "multiline",
        "multiline_start",
        "multiline_continue",
        "parse",
        "detect_priority",
        "rate_limit",
        "rate_limit_burst",
    )

    @field_validator("multiline")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value in ("", "none", "python", "java", "custom"):
            return value
        raise ValueError(f"must be '', 'none', 'python', 'java' or 'custom', not {value!r}")

    @field_validator("multiline_start", "multiline_continue")
    @classmethod
    def _regex(cls, value: str) -> str:
        return _check_regex(value, as_bytes=True)  # lines are matched as bytes

    @field_validator("label_overrides")
    @classmethod
    def _label_options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known: tuple[str, ...] = cls.model_fields["label_overrides"].default
        for option in value:
            if option not in known:
                shown = option if len(option) <= 40 else option[:40] + "..."
                raise ValueError(f"unknown option {shown!r} (known: {', '.join(known)})")
        return value

    @model_validator(mode="after")
    def _custom_needs_patterns(self) -> TransformsConfig:
        if self.multiline == "custom" and not (self.multiline_start and self.multiline_continue):
            raise ValueError("multiline = 'custom' needs multiline_start and multiline_continue")
        return self


class InnerJournalConfig(_Section):
    """Containers that keep a journal of their own (systemd inside): mirrored by default, on
    local engines; a container opts out with the label journald-bridge.inner_journal=false.
    `max_workers`: reader processes at once, all containers together (about 10 MiB each);
    more containers with a journal than that are read in turns."""

    enabled: bool = True
    max_workers: Annotated[int, Field(ge=1, le=1024)] = 16


class KubernetesConfig(_Section):
    """A Kubernetes node's pod logs: the kubelet's CRI log files (sources/kubernetes/).

    `enabled = "auto"` (the default): on where `pods_dir` exists and a CRI socket answers at
    start; off otherwise, with one info line. `true`: on, and a CRI socket that does not answer
    is reported in /readyz while lines keep flowing with the path's fields. `false`: off."""

    enabled: bool | Literal["auto"] = "auto"
    pods_dir: str = "/var/log/pods"
    # The runtime's CRI socket; "" tries containerd's, then CRI-O's.
    cri_socket: str = ""
    node_name: str = ""  # KUBERNETES_NODE; "" is this host's name (the kubelet's default)
    # Which namespaces are forwarded (fnmatch patterns; none listed: all), before [filter].
    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    # This source's containers are chosen by this table instead of [filter] (as for engines).
    filter: FilterConfig | None = None

    @property
    def cri_sockets(self) -> tuple[str, ...]:
        if self.cri_socket:
            return (self.cri_socket,)
        return ("/run/containerd/containerd.sock", "/var/run/crio/crio.sock")


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Section):
    docker: DockerConfig = DockerConfig()
    engines: tuple[EngineConfig, ...] = ()
    journal: JournalConfig = JournalConfig()
    state: StateConfig = StateConfig()
    forward: ForwardConfig = ForwardConfig()
    filter: FilterConfig = FilterConfig()
    transforms: TransformsConfig = TransformsConfig()
    metrics: MetricsConfig = MetricsConfig()
    inner_journal: InnerJournalConfig = InnerJournalConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _engines(self) -> Config:
        names = [e.name for e in self.engines]
        if self.docker.enabled and DEFAULT_ENGINE in names:
            raise ValueError(
                f"engine name {DEFAULT_ENGINE!r} is the [docker] section's; "
                "set [docker] enabled = false to define it in [[engines]]"
            )
        if KUBERNETES_SOURCE in names:
            raise ValueError(f"engine name {KUBERNETES_SOURCE!r} is the [kubernetes] source's")
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"engine names must be unique: {', '.join(dupes)}")
        if not self.all_engines and self.kubernetes.enabled is False:
            raise ValueError(
                "no source: [docker] is disabled, there are no [[engines]] and [kubernetes] is off"
            )
        return self

    @property
    def all_engines(self) -> tuple[EngineConfig, ...]:
        """Every engine to read, the [docker] section's first."""
        docker = (EngineConfig.from_docker(self.docker),) if self.docker.enabled else ()
        return docker + self.engines

    def filter_for(self, engine: str) -> FilterConfig:
        """The filter of the engine named `engine`: its own table's, else [filter]."""
        own = next((e.filter for e in self.all_engines if e.name == engine), None)
        if engine == KUBERNETES_SOURCE:
            own = self.kubernetes.filter
        return own if own is not None else self.filter


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Reads, overlays the environment, validates. Raises ConfigError with a one-line message."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    _apply_environment(data, os.environ if environ is None else environ)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{where}: {message}{more}") from None


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if len(path) < 2:
            continue
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(path[:-1])} is not a section")
            node = child
        node[path[-1]] = _env_value(raw)


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
