"""JSON log lines: MESSAGE from the message key, PRIORITY from the level, other keys as fields.

Pure. A line is a container's to write, so:

- A line that is not a JSON object passes unchanged; so does one nested too deeply for the
  parser (Python's recursion limit), which also counts as a failed line (`line_failed("json")`).
- A container never sets a trusted field (`_...`), one that readers trust (`OBJECT_*`, `UNIT`,
  ...) or a fixed one (`CONTAINER_*`, `SYSLOG_*`, `PRIORITY`, ...): `core.fields.is_protected`.
- At most MAX_FIELDS extra fields per entry, taken from the first MAX_KEYS_EXAMINED scalar
  keys, each value at most MAX_VALUE_BYTES (cut on a character boundary), all names and values
  together at most MAX_EXTRA_BYTES; the fields the caps leave off are counted
  (`fields_dropped("count" | "bytes", n)`), so the work per line after parsing is bounded.
- Text is encoded with `bridge.core.fields.utf8`: a lone surrogate (`"\\ud800"`) becomes U+FFFD.
- `apply` changes the record only once everything that can fail has succeeded.
"""

from __future__ import annotations

import json

from bridge.core.fields import is_protected, sanitize_field_name, utf8
from bridge.core.record import Record
from bridge.transforms.events import NO_EVENTS, TransformEvents
from bridge.transforms.priority import level_priority

MAX_FIELDS = 64
MAX_VALUE_BYTES = 64 * 1024
MAX_EXTRA_BYTES = 256 * 1024
MAX_KEYS_EXAMINED = 4 * MAX_FIELDS  # scalar keys named per line, looking for MAX_FIELDS fields


class JsonParser:
    def __init__(
        self,
        message_keys: tuple[str, ...],
        level_keys: tuple[str, ...],
        prefix: str = "",
        events: TransformEvents = NO_EVENTS,
    ) -> None:
        self._message_keys = message_keys
        self._level_keys = level_keys
        self._prefix = prefix
        self._events = events

    def apply(self, record: Record) -> Record:
        text = record.message.lstrip()
        if not text.startswith(b"{"):
            return record
        try:
            data = json.loads(text)
        except ValueError:  # not JSON (UnicodeDecodeError included): the line as it is
            return record
        except RecursionError:  # nested deeper than the parser goes: as it is, and counted
            self._events.line_failed("json")
            return record
        if not isinstance(data, dict):
            return record
        used: set[str] = set()
        message = record.message
        for key in self._message_keys:
            value = data.get(key)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                message = utf8(str(value))
                used.add(key)
                break
        priority = record.priority
        for key in self._level_keys:
            if key in data:
                level = level_priority(data[key])
                if level is not None:
                    priority = level
                    used.add(key)
                    break
        fields = record.extra_fields + tuple(self._fields(data, used))  # an earlier step's too
        record.message, record.priority, record.extra_fields = message, priority, fields
        return record

    def _fields(self, data: dict[str, object], used: set[str]) -> list[tuple[bytes, bytes]]:
        fields: list[tuple[bytes, bytes]] = []
        names: set[str] = set()
        budget = MAX_EXTRA_BYTES
        over_count = over_bytes = examined = 0
        for key, value in data.items():
            if (
                key in used
                or key.startswith("_")
                or value is None
                or isinstance(value, dict | list)
            ):
                continue
            examined += 1
            if len(fields) == MAX_FIELDS or examined > MAX_KEYS_EXAMINED:
                # Naming a key costs a microsecond or two and a line may hold 70,000 keys:
                # past the caps, the rest are counted, not named.
                over_count += 1
                continue
            name = sanitize_field_name(self._prefix + key)
            if name is None or is_protected(name) or name in names:
                continue
            encoded = (
                (b"true" if value else b"false")
                if isinstance(value, bool)
                else _cut(utf8(str(value)), MAX_VALUE_BYTES)
            )
            size = len(name) + len(encoded)
            if size > budget:
                over_bytes += 1
                continue
            budget -= size
            names.add(name)
            fields.append((name.encode(), encoded))
        if over_count:
            self._events.fields_dropped("count", over_count)
        if over_bytes:
            self._events.fields_dropped("bytes", over_bytes)
        return fields


def _cut(value: bytes, limit: int) -> bytes:
    """At most `limit` bytes, not ending inside a UTF-8 character."""
    if len(value) <= limit:
        return value
    end = limit
    while end > limit - 3 and value[end] & 0xC0 == 0x80:  # a continuation byte: back up
        end -= 1
    return value[:end]
