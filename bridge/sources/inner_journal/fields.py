"""Which fields of an inner journal entry reach the host journal, and under which names. Pure.

An inner entry's fields are the container's to write (its journald, or anyone with write access
to its journal files), so no inner field may set a host field that the host trusts or that the
bridge reads back. Invariants of `map_entry`:

- Passed as they are (an explicit allow-list): `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER`,
  `SYSLOG_FACILITY`, `SYSLOG_PID`, `CODE_*`, `ERRNO`, `MESSAGE_ID`, `TID`; each at most once
  (the first value; later ones are dropped as "duplicate").
- Every other field is renamed under `INNER_`: the inner trusted fields lose their leading
  underscore (`_SYSTEMD_UNIT` -> `INNER_SYSTEMD_UNIT`, `_PID` -> `INNER_PID`) and so do the
  others (`FOO` -> `INNER_FOO`, `UNIT` -> `INNER_UNIT`, `OBJECT_PID` -> `INNER_OBJECT_PID`,
  `COREDUMP_UNIT` -> `INNER_COREDUMP_UNIT`, `CONTAINER_ID_FULL` -> `INNER_CONTAINER_ID_FULL`,
  `SYSLOG_TIMESTAMP` -> `INNER_SYSLOG_TIMESTAMP`, `JOURNALD_BRIDGE_CURSOR` ->
  `INNER_JOURNALD_BRIDGE_CURSOR`). So `OBJECT_*`, `COREDUMP_*`, `UNIT`/`USER_UNIT` and the
  read-back fields -- the inner position's `JOURNALD_BRIDGE_INNER_CURSOR` with
  `CONTAINER_STREAM` and `CONTAINER_ID_FULL` (sinks/journald/inner_readback.py) among them --
  are never passed through: they are *renamed*, and no output name is ever
  `bridge.core.fields.is_protected` except the allow-listed `SYSLOG_*` and `INNER_*` itself (a
  namespace no label or JSON key can write into).
- `INNER_<name>` for a name journald sets as a trusted field (`INNER_PID`, `INNER_SYSTEMD_*`,
  ...; `RESERVED_NAMES`, `RESERVED_PREFIXES`) only ever comes from the trusted field, and
  `INNER_REALTIME_TIMESTAMP` only from the entry's own timestamp: an untrusted
  `SYSTEMD_UNIT=nginx.service` sent by any process in the container is dropped ("reserved"), so
  `journalctl CONTAINER_NAME=web INNER_SYSTEMD_UNIT=nginx.service` cannot be forged from inside
  except by the container's root.
- Names are sanitized (`bridge.core.fields.sanitize_field_name`); a name with nothing left is
  dropped ("invalid"); a `PRIORITY` that is not 0-7 is kept as `INNER_PRIORITY`.
- Caps: `MESSAGE` at `max_message_bytes` (cut, "truncated"); every other field together at
  most MAX_INNER_FIELDS fields ("count") and MAX_INNER_FIELD_BYTES bytes of names and values (a
  field that does not fit is left off whole, "bytes"), the allow-listed fields first, then the
  trusted ones that say who sent the entry, then the other trusted ones, then the rest, each
  group in the entry's own order. `INNER_REALTIME_TIMESTAMP` is ours and always present.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bridge.core.fields import MAX_FIELD_NAME, sanitize_field_name

INNER_PREFIX = "INNER_"
REALTIME_FIELD = b"INNER_REALTIME_TIMESTAMP"

PASS_THROUGH = frozenset(
    {
        "MESSAGE",
        "PRIORITY",
        "SYSLOG_IDENTIFIER",
        "SYSLOG_FACILITY",
        "SYSLOG_PID",
        "ERRNO",
        "MESSAGE_ID",
        "TID",
    }
)
PASS_THROUGH_PREFIXES = ("CODE_",)

# The trusted fields journald writes (systemd.journal-fields(7), journald 252-256), without the
# underscore: their INNER_ names are reserved for the trusted field itself.
RESERVED_NAMES = frozenset(
    {
        "PID",
        "UID",
        "GID",
        "COMM",
        "EXE",
        "CMDLINE",
        "BOOT_ID",
        "MACHINE_ID",
        "HOSTNAME",
        "TRANSPORT",
        "STREAM_ID",
        "LINE_BREAK",
        "NAMESPACE",
        "RUNTIME_SCOPE",
        "FSUID",
    }
)
# Names of ours: no inner field, trusted or not, may produce them.
_OURS = frozenset({"REALTIME_TIMESTAMP", "MONOTONIC_TIMESTAMP"})
RESERVED_PREFIXES = ("SYSTEMD_", "AUDIT_", "KERNEL_", "UDEV_", "SELINUX_", "SOURCE_", "CAP_")

# The trusted fields that say who sent an entry, kept first when the caps bite.
_WHO = (
    "_SYSTEMD_UNIT",
    "_SYSTEMD_USER_UNIT",
    "_PID",
    "_COMM",
    "_EXE",
    "_HOSTNAME",
    "_MACHINE_ID",
    "_BOOT_ID",
    "_TRANSPORT",
    "_UID",
)
_WHO_RANK = {name: rank for rank, name in enumerate(_WHO)}

MAX_INNER_FIELDS = 64  # besides MESSAGE and PRIORITY
MAX_INNER_FIELD_BYTES = 256 << 10  # names and values of those fields together
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # as forward.max_line_bytes' default

# Reasons a field was left out, as counted in `Mapped.dropped`.
DROP_REASONS = ("count", "bytes", "reserved", "duplicate", "invalid", "truncated")


@dataclass(frozen=True, slots=True)
class Mapped:
    """What of one inner entry goes to the host: the message, its priority, the other fields."""

    message: bytes
    priority: int | None
    fields: tuple[tuple[bytes, bytes], ...]
    dropped: dict[str, int] = field(default_factory=dict)


def is_pass_through(name: str) -> bool:
    if name in PASS_THROUGH:
        return True
    return (
        name.startswith(PASS_THROUGH_PREFIXES)
        and len(name) <= MAX_FIELD_NAME
        and sanitize_field_name(name) == name
    )


def inner_name(name: str) -> str | None:
    """The host name of a field that is not passed through; None when nothing is left of it.

    Trusted (`_X`) and untrusted (`X`) fields land in the same `INNER_X`; `map_entry` keeps the
    reserved ones for trusted fields.
    """
    base = sanitize_field_name(name)
    if base is None:
        return None
    return (INNER_PREFIX + base)[:MAX_FIELD_NAME].rstrip("_")


def is_reserved(base: str) -> bool:
    """Whether INNER_<base> is kept for a trusted field (or our timestamp)."""
    return base in RESERVED_NAMES or base in _OURS or base.startswith(RESERVED_PREFIXES)


def parse_priority(value: bytes) -> int | None:
    return value[0] - 48 if len(value) == 1 and 48 <= value[0] <= 55 else None


# How one field name is handled, computed once per name (names repeat from entry to entry):
# (what, sort key, host name, why dropped). Sort keys: 0 allow-listed, 1000 + rank for the
# trusted fields that say who sent the entry, 2000 other trusted ones, 3000 the rest.
_MESSAGE, _PRIORITY, _KEEP, _DROP = range(4)
_Class = tuple[int, int, bytes, str]
_CLASSES: dict[str, _Class] = {}
_MAX_CLASSES = 4096  # a journal with endless distinct names cannot grow the cache without end


def _classify(name: str) -> _Class:
    if name == "MESSAGE":
        return (_MESSAGE, 0, b"", "")
    if name == "PRIORITY":
        return (_PRIORITY, 0, b"", "")
    if is_pass_through(name):
        return (_KEEP, 0, name.encode(), "")
    renamed = inner_name(name)
    if renamed is None:
        return (_DROP, 0, b"", "invalid")
    base = renamed[len(INNER_PREFIX) :]
    trusted = name.startswith("_")
    if base in _OURS or (not trusted and is_reserved(base)):
        return (_DROP, 0, b"", "reserved")
    if not trusted:
        return (_KEEP, 3000, renamed.encode(), "")
    return (_KEEP, 1000 + _WHO_RANK[name] if name in _WHO_RANK else 2000, renamed.encode(), "")


def map_entry(
    pairs: Iterable[tuple[str, bytes]],
    realtime_us: int,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Mapped:
    """The host view of one inner entry (its fields in the journal's order); see the module."""
    dropped: dict[str, int] = {}
    message: bytes | None = None
    priority: int | None = None
    seen: set[str] = set()  # allow-listed names already taken
    candidates: list[tuple[int, int, bytes, bytes]] = []  # (sort key, order, name, value)
    classes = _CLASSES
    for order, (name, value) in enumerate(pairs):
        what, key, host_name, why = classes.get(name) or _remember(name)
        if what == _DROP:
            _count(dropped, why)
            continue
        if key == 0:  # allow-listed: once each
            if name in seen:
                _count(dropped, "duplicate")
                continue
            seen.add(name)
            if what == _MESSAGE:
                message = value
                continue
            if what == _PRIORITY:
                priority = parse_priority(value)
                if priority is None:  # not 0-7: kept for what it said, not as a priority
                    candidates.append((3000, order, b"INNER_PRIORITY", value))
                continue
        candidates.append((key, order, host_name, value))
    candidates.sort()  # (key, order) is unique: names and values are never compared
    kept: list[tuple[bytes, bytes]] = [(REALTIME_FIELD, str(realtime_us).encode())]
    budget = MAX_INNER_FIELD_BYTES
    for _, _, host_name, value in candidates:
        if len(kept) > MAX_INNER_FIELDS:  # our timestamp does not count against the cap
            _count(dropped, "count")
            continue
        size = len(host_name) + len(value)
        if size > budget:
            _count(dropped, "bytes")
            continue
        budget -= size
        kept.append((host_name, value))
    if message is None:
        message = b""
    elif len(message) > max_message_bytes:
        message = message[:max_message_bytes]
        _count(dropped, "truncated")
    return Mapped(message, priority, tuple(kept), dropped)


def _remember(name: str) -> _Class:
    if len(_CLASSES) >= _MAX_CLASSES:
        _CLASSES.clear()
    cls = _CLASSES[name] = _classify(name)
    return cls


def _count(dropped: dict[str, int], reason: str) -> None:
    dropped[reason] = dropped.get(reason, 0) + 1
