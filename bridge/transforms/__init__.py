"""The transforms between the Docker source and the journal sink, per container.

Each step is small, pure and knows nothing of the others; `TransformChain` runs them in order:
multiline -> JSON -> priority detection -> rate limit. Settings come from `[transforms]` in the
config, overridden per container by labels `journald-bridge.<option>=value`. A bad label value
is reported once for that container, which then runs without that transform.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.config import TransformsConfig
from bridge.record import Record
from bridge.transforms.multiline import PRESETS, MultilineMerger
from bridge.transforms.priority import PriorityDetector
from bridge.transforms.ratelimit import RateLimiter
from bridge.transforms.structured import JsonParser

LABEL_PREFIX = "journald-bridge."

# (kind, one-line message) -> reported once by the caller
ReportError = Callable[[str, str], None]


@dataclass
class TransformChain:
    multiline: MultilineMerger | None
    json: JsonParser | None
    priority: PriorityDetector | None
    rate_limit: RateLimiter | None
    container_name: Callable[[], str]

    def process(self, records: list[Record], now: float) -> list[Record]:
        if self.multiline is not None:
            merged: list[Record] = []
            for record in records:
                merged.extend(self.multiline.push(record, now))
            records = merged
        return [self._after_merge(r, now) for r in records]

    def _after_merge(self, record: Record, now: float) -> Record:
        if self.json is not None:
            record = self.json.apply(record)
        if self.priority is not None:
            record = self.priority.apply(record)
        if self.rate_limit is not None:
            record = self.rate_limit.apply(record, now)
        return record

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (
                self.multiline.next_deadline() if self.multiline else None,
                self.rate_limit.next_deadline() if self.rate_limit else None,
            )
            if d is not None
        ]
        return min(deadlines, default=None)

    def tick(self, now: float, *, final: bool = False) -> list[Record]:
        """Records that time (or the end of the stream, `final`) releases."""
        out: list[Record] = []
        if self.multiline is not None:
            released = self.multiline.flush() if final else self.multiline.flush_due(now)
            out.extend(self._after_merge(r, now) for r in released)
        if self.rate_limit is not None:
            notice = self.rate_limit.notice(now, self.container_name(), force=final)
            if notice is not None:
                out.append(notice)
        return out

    def take_merged_count(self) -> int:
        if self.multiline is None:
            return 0
        count, self.multiline.merged_records = self.multiline.merged_records, 0
        return count


def build_chain(
    config: TransformsConfig,
    labels: Mapping[str, str],
    max_line_bytes: int,
    container_name: Callable[[], str],
    report: ReportError,
) -> TransformChain | None:
    """The chain for one container, or None when it has no transforms (the fast path)."""

    def label(option: str) -> str | None:
        value = labels.get(LABEL_PREFIX + option)
        return None if value is None else value.strip()

    chain = TransformChain(
        _multiline(config, label, max_line_bytes, report),
        _json(config, label, report),
        _priority(config, label, report),
        _rate_limit(config, label, report),
        container_name,
    )
    steps = (chain.multiline, chain.json, chain.priority, chain.rate_limit)
    return chain if any(step is not None for step in steps) else None


def _multiline(
    config: TransformsConfig,
    label: Callable[[str], str | None],
    max_bytes: int,
    report: ReportError,
) -> MultilineMerger | None:
    mode = label("multiline")
    start, continuation = config.multiline_start, config.multiline_continue
    if label("multiline_start") is not None and mode in (None, "custom"):
        mode = "custom"
        start = label("multiline_start") or ""
        continuation = label("multiline_continue") or ""
    elif mode is None:
        mode = config.multiline
    flush = config.multiline_flush_ms / 1000
    if mode in ("", "none", "off"):
        return None
    if mode in PRESETS:
        return MultilineMerger.preset(mode, flush, max_bytes)
    if mode != "custom":
        report("multiline", f"unknown multiline mode {mode!r} (python, java, custom, none)")
        return None
    if not (start and continuation):
        report("multiline", "custom multiline needs both multiline_start and multiline_continue")
        return None
    try:
        return MultilineMerger(start, continuation, flush, max_bytes)
    except re.error as exc:
        report("multiline", f"invalid multiline regular expression: {exc}; multiline is off")
        return None


def _json(
    config: TransformsConfig, label: Callable[[str], str | None], report: ReportError
) -> JsonParser | None:
    value = label("parse")
    enabled = config.parse_json if value is None else value == "json"
    if value not in (None, "json", "none", "off"):
        report("parse", f"unknown parse mode {value!r} (json, none)")
        enabled = config.parse_json
    if not enabled:
        return None
    return JsonParser(config.json_message_keys, config.json_level_keys, config.json_field_prefix)


def _priority(
    config: TransformsConfig, label: Callable[[str], str | None], report: ReportError
) -> PriorityDetector | None:
    value = label("detect_priority")
    prefix, words = config.detect_priority_prefix, config.detect_level_words
    if value is not None:
        modes = {
            "none": (False, False),
            "prefix": (True, False),
            "words": (False, True),
            "all": (True, True),
        }
        if value in modes:
            prefix, words = modes[value]
        else:
            report(
                "detect_priority", f"unknown detect_priority {value!r} (none, prefix, words, all)"
            )
    return PriorityDetector(prefix=prefix, words=words) if prefix or words else None


def _rate_limit(
    config: TransformsConfig, label: Callable[[str], str | None], report: ReportError
) -> RateLimiter | None:
    rate, burst = config.rate_limit_lines_per_second, config.rate_limit_burst
    for option in ("rate_limit", "rate_limit_burst"):
        value = label(option)
        if value is None:
            continue
        try:
            number = float(value)
            if number < 0:
                raise ValueError
        except ValueError:
            report(option, f"{option} must be a non-negative number, not {value!r}")
            continue
        if option == "rate_limit":
            rate = number
        else:
            burst = int(number)
    if rate <= 0:
        return None
    return RateLimiter(rate, burst or int(rate), config.rate_limit_interval_seconds)
