"""`build_chain`: one container's transforms from `[transforms]` and its labels.

Labels (`journald-bridge.<option>=value`) are hostile input. Invariants:

- `build_chain` never raises, whatever the labels: each transform is built on its own, and
  anything unexpected while building one is reported and leaves that transform as the
  operator configured it (the rate limit) or off (the others).
- A label counts only for an option in `TransformsConfig.label_overrides`; any other is
  reported and ignored. A bad value is reported; the container keeps forwarding.
- A label may only lower the operator's rate limit: `rate_limit` is a finite number > 0 and,
  when the operator set a limit, at most it; `rate_limit_burst` a positive integer, at most the
  operator's effective burst. A refused value is reported and the operator's applies.
- A container's multiline patterns are compiled with RE2 and bounded (`regex.compile_untrusted`);
  the operator's with `re`.
- Reports name the option (a fixed set, fit for a metric label) and quote a container's value
  only shortened and escaped (`events.shown`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

from bridge.config import TransformsConfig
from bridge.transforms.chain import TransformChain
from bridge.transforms.events import ReportError, TransformEvents, shown
from bridge.transforms.multiline import PRESETS, MultilineMerger
from bridge.transforms.priority import PriorityDetector
from bridge.transforms.ratelimit import RateLimiter
from bridge.transforms.regex import Matcher, PatternRefused, compile_trusted, compile_untrusted
from bridge.transforms.structured import JsonParser

LABEL_PREFIX: Final = "journald-bridge."

# ASCII digits only (float() would also take "1e999", "inf", "nan" and Arabic-Indic digits),
# of bounded length.
_NUMBER = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_INTEGER = re.compile(r"[0-9]{1,12}")

_T = TypeVar("_T")


def build_chain(
    config: TransformsConfig,
    labels: Mapping[str, str],
    max_line_bytes: int,
    container_name: Callable[[], str],
    report: ReportError,
    events: TransformEvents,
) -> TransformChain | None:
    """The chain for one container, or None when it has no transforms (the fast path)."""
    options = _Labels(labels, config.label_overrides, report)
    multiline = _guarded(
        "multiline", report, lambda: _multiline(config, options, max_line_bytes, report)
    )
    json = _guarded("parse", report, lambda: _json(config, options, report, events))
    priority = _guarded("detect_priority", report, lambda: _priority(config, options, report))
    rate_limit = _guarded(
        "rate_limit",
        report,
        lambda: _rate_limit(config, options, report),
        # The operator's limit still applies when the labels cannot be made sense of.
        fallback=lambda: _rate_limit(config, _Labels({}, (), report), report),
    )
    if multiline is None and json is None and priority is None and rate_limit is None:
        return None
    return TransformChain(multiline, json, priority, rate_limit, container_name, events)


class _Labels:
    """The transform labels of one container, through the operator's allow-list."""

    def __init__(
        self, labels: Mapping[str, str], allowed: tuple[str, ...], report: ReportError
    ) -> None:
        self._labels = labels
        self._allowed = frozenset(allowed)
        self._report = report

    def get(self, option: str) -> str | None:
        """The label's value (stripped), or None when it is absent or not allowed."""
        value = self._labels.get(LABEL_PREFIX + option)
        if value is None:
            return None
        if option not in self._allowed:
            self._report(option, "this option is not in transforms.label_overrides; ignored")
            return None
        return str(value).strip()


def _guarded(
    kind: str,
    report: ReportError,
    build: Callable[[], _T | None],
    fallback: Callable[[], _T | None] | None = None,
) -> _T | None:
    """`build()`; should it raise (a last resort: labels must never stop a container), the
    error is reported and `fallback()` (the operator's setting) or nothing is used instead."""
    try:
        return build()
    except Exception as exc:
        then = "it is off" if fallback is None else "the operator's setting applies"
        report(kind, f"cannot be set up ({type(exc).__name__}); {then}")
    if fallback is None:
        return None
    try:
        return fallback()
    except Exception as exc:
        report(kind, f"cannot be set up ({type(exc).__name__}); it is off")
        return None


def _multiline(
    config: TransformsConfig, labels: _Labels, max_bytes: int, report: ReportError
) -> MultilineMerger | None:
    mode = labels.get("multiline")
    start_label, continue_label = labels.get("multiline_start"), labels.get("multiline_continue")
    from_labels = (start_label is not None or continue_label is not None) and mode in (
        None,
        "custom",
    )
    if mode == "":  # a label that says nothing; the config's "" is off
        report("multiline", "empty multiline label (python, java, custom, none); multiline is off")
        return None
    if mode is None:
        mode = "custom" if from_labels else config.multiline
    if mode in ("", "none", "off"):
        return None

    def merger(start: Matcher, continuation: Matcher) -> MultilineMerger:
        flush = config.multiline_flush_ms / 1000
        return MultilineMerger(start, continuation, flush, max_bytes, config.multiline_max_lines)

    if mode in PRESETS:
        return MultilineMerger.preset(
            mode, config.multiline_flush_ms / 1000, max_bytes, config.multiline_max_lines
        )
    if mode != "custom":
        report("multiline", f"unknown multiline mode {shown(mode)} (python, java, custom, none)")
        return None
    if not from_labels:
        if not (config.multiline_start and config.multiline_continue):
            report("multiline", "custom multiline needs multiline_start and multiline_continue")
            return None
        return merger(
            compile_trusted(config.multiline_start), compile_trusted(config.multiline_continue)
        )
    if not (start_label and continue_label):
        report("multiline", "custom multiline needs both multiline_start and multiline_continue")
        return None
    compiled: list[Matcher] = []
    for option, pattern in (
        ("multiline_start", start_label),
        ("multiline_continue", continue_label),
    ):
        try:
            compiled.append(compile_untrusted(pattern))
        except PatternRefused as exc:
            report("multiline", f"{option} {shown(pattern)} {exc}; multiline is off")
            return None
    return merger(compiled[0], compiled[1])


def _json(
    config: TransformsConfig, labels: _Labels, report: ReportError, events: TransformEvents
) -> JsonParser | None:
    value = labels.get("parse")
    enabled = config.parse_json
    if value == "json":
        enabled = True
    elif value in ("none", "off"):
        enabled = False
    elif value is not None:
        report("parse", f"unknown parse mode {shown(value)} (json, none)")
    if not enabled:
        return None
    return JsonParser(
        config.json_message_keys, config.json_level_keys, config.json_field_prefix, events
    )


_PRIORITY_MODES: Final = {
    "none": (False, False),
    "prefix": (True, False),
    "words": (False, True),
    "all": (True, True),
}


def _priority(
    config: TransformsConfig, labels: _Labels, report: ReportError
) -> PriorityDetector | None:
    value = labels.get("detect_priority")
    prefix, words = config.detect_priority_prefix, config.detect_level_words
    mode = _PRIORITY_MODES.get(value) if value is not None else None
    if mode is not None:
        prefix, words = mode
    elif value is not None:
        report(
            "detect_priority", f"unknown detect_priority {shown(value)} (none, prefix, words, all)"
        )
    return PriorityDetector(prefix=prefix, words=words) if prefix or words else None


def _rate_limit(
    config: TransformsConfig, labels: _Labels, report: ReportError
) -> RateLimiter | None:
    operator_rate, operator_burst = config.rate_limit_lines_per_second, config.rate_limit_burst
    rate, burst = operator_rate, operator_burst
    value = labels.get("rate_limit")
    if value is not None:
        number = float(value) if _NUMBER.fullmatch(value) else 0.0
        if number <= 0:
            report(
                "rate_limit",
                f"must be a number of lines per second above 0, not {shown(value)}"
                + _operator_applies(operator_rate),
            )
        elif operator_rate > 0 and number > operator_rate:
            report(
                "rate_limit",
                f"{value} is above the operator's limit of {operator_rate:g} lines per second; "
                "the operator's applies (a label may only lower it)",
            )
        else:
            rate = number
    value = labels.get("rate_limit_burst")
    if value is not None:
        limit = (operator_burst or _one_second(operator_rate)) if operator_rate > 0 else None
        count = int(value) if _INTEGER.fullmatch(value) else 0
        if count <= 0:
            report(
                "rate_limit_burst",
                f"must be a whole number of lines above 0, not {shown(value)}"
                + _operator_applies(operator_rate),
            )
        elif limit is not None and count > limit:
            report(
                "rate_limit_burst",
                f"{value} is above the operator's burst of {limit} lines; "
                "the operator's applies (a label may only lower it)",
            )
        else:
            burst = count
    if rate <= 0:
        return None
    return RateLimiter(rate, burst or _one_second(rate), config.rate_limit_interval_seconds)


def _one_second(rate: float) -> int:
    return max(1, int(rate))


def _operator_applies(operator_rate: float) -> str:
    return "; the operator's limit applies" if operator_rate > 0 else "; no limit"
