from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from bridge.telemetry import Telemetry


def test_per_container_series_are_removed_with_the_container():
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, per_container=True)
    for n in range(20):
        labels = ("docker", f"c{n}", "svc")
        telemetry.lines_forwarded(1, 3, 30, labels)
        telemetry.lines_dropped("rate_limited", 2, labels)
        telemetry.container_removed(labels)
    text = generate_latest(registry).decode()
    assert 'container_name="' not in text
    assert (
        registry.get_sample_value("journald_bridge_lines_forwarded_total", {"stream": "stdout"})
        == 60
    )
    assert (
        registry.get_sample_value("journald_bridge_lines_dropped_total", {"reason": "rate_limited"})
        == 40
    )


def test_no_per_container_series_unless_asked():
    registry = CollectorRegistry()
    Telemetry(registry).lines_forwarded(2, 1, 5, ("docker", "web", ""))
    assert "container_name" not in generate_latest(registry).decode()


def test_build_info_and_process_metrics():
    registry = CollectorRegistry()
    Telemetry(registry)
    assert registry.get_sample_value("journald_bridge_build_info", {"version": "0.1.0"}) == 1
    assert registry.get_sample_value("process_resident_memory_bytes") > 0


def test_alerts_see_the_first_error_because_every_series_starts_at_zero():
    registry = CollectorRegistry()
    Telemetry(registry)
    for errno_name in ("ENOENT", "ECONNREFUSED", "EAGAIN", "ENOBUFS"):
        assert (
            registry.get_sample_value(
                "journald_bridge_journal_send_errors_total", {"errno": errno_name}
            )
            == 0
        )
    assert (
        registry.get_sample_value("journald_bridge_transform_failures_total", {"step": "json"}) == 0
    )
    assert (
        registry.get_sample_value("journald_bridge_fields_dropped_total", {"reason": "count"}) == 0
    )
    # down until the journal socket has been connected
    assert registry.get_sample_value("journald_bridge_journal_up") == 0


def test_an_engine_is_down_until_connected_and_docker_keeps_its_old_names():
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    for engine in ("docker", "podman"):
        telemetry.engine_configured(engine)
    assert registry.get_sample_value("journald_bridge_engine_up", {"engine": "podman"}) == 0
    telemetry.engine_connected("docker", True)
    telemetry.engine_event("docker", "start")
    telemetry.engine_event("podman", "die")
    telemetry.engine_reconnect("podman")
    assert registry.get_sample_value("journald_bridge_engine_up", {"engine": "docker"}) == 1
    assert registry.get_sample_value("journald_bridge_docker_up") == 1  # the alias
    assert (
        registry.get_sample_value("journald_bridge_docker_events_total", {"action": "start"}) == 1
    )
    assert (
        registry.get_sample_value("journald_bridge_docker_events_total", {"action": "die"}) is None
    )
    assert (
        registry.get_sample_value("journald_bridge_engine_reconnects_total", {"engine": "podman"})
        == 1
    )
    assert registry.get_sample_value("journald_bridge_docker_reconnects_total") == 0
    attached = {"engine": "podman", "source": "files"}
    assert registry.get_sample_value("journald_bridge_containers_attached", attached) == 0
