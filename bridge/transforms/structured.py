"""JSON log lines: MESSAGE from the message key, PRIORITY from the level, other keys as fields.

Pure. The limits protect the journal and the bridge's own fields: a container can never set a
trusted field (`_...`) or a fixed one (`CONTAINER_*`, `SYSLOG_*`, `PRIORITY`, ...), at most 64
extra fields per entry, each value at most 64 KiB. A line that is not a JSON object passes
unchanged.
"""

from __future__ import annotations

import json

from bridge.fields import is_protected, sanitize_field_name
from bridge.record import Record
from bridge.transforms.priority import level_priority

MAX_FIELDS = 64
MAX_VALUE_BYTES = 64 * 1024


class JsonParser:
    def __init__(
        self, message_keys: tuple[str, ...], level_keys: tuple[str, ...], prefix: str = ""
    ) -> None:
        self._message_keys = message_keys
        self._level_keys = level_keys
        self._prefix = prefix

    def apply(self, record: Record) -> Record:
        text = record.message.lstrip()
        if not text.startswith(b"{"):
            return record
        try:
            data = json.loads(text)
        except ValueError:
            return record
        if not isinstance(data, dict):
            return record
        used: set[str] = set()
        for key in self._message_keys:
            value = data.get(key)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                record.message = str(value).encode(errors="surrogateescape")
                used.add(key)
                break
        for key in self._level_keys:
            if key in data:
                priority = level_priority(data[key])
                if priority is not None:
                    record.priority = priority
                    used.add(key)
                    break
        record.extra_fields = tuple(self._fields(data, used))
        return record

    def _fields(self, data: dict[str, object], used: set[str]) -> list[tuple[bytes, bytes]]:
        fields: list[tuple[bytes, bytes]] = []
        names: set[str] = set()
        for key, value in data.items():
            if (
                key in used
                or key.startswith("_")
                or isinstance(value, dict | list)
                or value is None
            ):
                continue
            name = sanitize_field_name(self._prefix + key)
            if name is None or is_protected(name) or name in names:
                continue
            if isinstance(value, bool):
                encoded = b"true" if value else b"false"
            else:
                encoded = str(value).encode(errors="surrogateescape")[:MAX_VALUE_BYTES]
            names.add(name)
            fields.append((name.encode(), encoded))
            if len(fields) == MAX_FIELDS:
                break
        return fields
