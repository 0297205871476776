"""The inner-journal series: present at zero from the start, fixed label values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bridge.telemetry import INNER_JOURNAL_ERRORS, INNER_JOURNAL_GAPS, Telemetry


def test_inner_journal_series_start_at_zero_and_count():
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, per_container=True)
    sample = registry.get_sample_value
    for kind in INNER_JOURNAL_ERRORS:
        assert sample("journald_bridge_inner_journal_errors_total", {"kind": kind}) == 0
    for kind in INNER_JOURNAL_GAPS:
        assert sample("journald_bridge_inner_journal_gaps_total", {"kind": kind}) == 0
    assert sample("journald_bridge_lines_forwarded_total", {"stream": "journal"}) == 0

    telemetry.inner_entries_forwarded(3, 30, ("docker", "web", ""))
    telemetry.inner_journal_gap("vacuumed", 7)
    telemetry.inner_journal_gap("reset", None)
    telemetry.inner_journal_error("stall", 2)
    telemetry.inner_journal_error("something new")
    assert sample("journald_bridge_lines_forwarded_total", {"stream": "journal"}) == 3
    assert sample("journald_bridge_bytes_forwarded_total", {"stream": "journal"}) == 30
    labels = {"engine": "docker", "container_name": "web", "compose_service": ""}
    assert sample("journald_bridge_container_lines_forwarded_total", labels) == 3
    assert sample("journald_bridge_inner_journal_gaps_total", {"kind": "vacuumed"}) == 1
    assert sample("journald_bridge_inner_journal_gaps_total", {"kind": "reset"}) == 1
    assert sample("journald_bridge_inner_journal_lost_entries_total") == 7
    assert sample("journald_bridge_inner_journal_errors_total", {"kind": "stall"}) == 2
    assert sample("journald_bridge_inner_journal_errors_total", {"kind": "other"}) == 1
