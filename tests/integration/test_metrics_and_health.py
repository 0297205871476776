"""Metrics and health endpoints, checked by promtool and scraped by a real Prometheus."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.integration import dockerd
from tests.integration.conftest import BRIDGE, free_port, wait_until

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).parents[2] / "deploy" / "prometheus"


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, timeout=60)


def test_live_metrics_pass_promtool_and_carry_real_values(bridge, journald, containers):
    bridge.configure(metrics={"per_container": True})
    bridge.start()
    c = containers.run("echo one; echo two; echo three >&2")
    journald.wait_messages(c.id, 3)
    wait_until(
        lambda: bridge.metric("journald_bridge_lines_forwarded_total") == 3, 10, "the counters"
    )
    status, text = bridge.get("/metrics")
    assert status == 200
    result = promtool("check", "metrics", stdin=text.encode())
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert bridge.metric("journald_bridge_lines_forwarded_total", stream="stdout") == 2
    assert bridge.metric("journald_bridge_lines_forwarded_total", stream="stderr") == 1
    assert bridge.metric("journald_bridge_bytes_forwarded_total", stream="stdout") == len("onetwo")
    assert bridge.metric("journald_bridge_container_attach_total") >= 1
    assert bridge.metric("journald_bridge_docker_events_total", action="start") >= 1
    assert bridge.metric("journald_bridge_docker_up") == 1
    assert bridge.metric("journald_bridge_build_info", version="0.1.0") == 1
    assert bridge.metric("journald_bridge_delivery_lag_seconds_count") >= 1
    assert bridge.metric("process_resident_memory_bytes") > 0
    assert (
        bridge.metric("journald_bridge_container_lines_forwarded_total", container_name=c.name) == 3
    )


def test_openmetrics_when_asked():
    from prometheus_client import CollectorRegistry

    from bridge.service.http import StatusServer

    server = StatusServer(("127.0.0.1", 0), CollectorRegistry(), lambda: "not yet")
    server.start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert r.read().endswith(b"# EOF\n")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5)
        assert info.value.code == 503 and info.value.read() == b"not ready: not yet\n"
    finally:
        server.stop()


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        config = workdir / "prom.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: journald-bridge\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        with open(workdir / "prometheus.log", "wb") as log:
            self.process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def query(self, expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())["data"]["result"]
        except OSError:
            return []

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


def test_a_real_prometheus_scrapes_the_forwarded_line_count(bridge, journald, containers, tmp_path):
    bridge.start()
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{bridge.port}")
    try:
        started = [
            containers.run(f"for i in $(seq 1 {n}); do echo l$i; done") for n in (150, 250, 100)
        ]
        for c, n in zip(started, (150, 250, 100), strict=True):
            journald.wait_messages(c.id, n)

        def scraped():
            result = prometheus.query(
                'sum(journald_bridge_lines_forwarded_total{job="journald-bridge"})'
            )
            return result and float(result[0]["value"][1]) == 500

        wait_until(scraped, 60, "Prometheus to see 500 forwarded lines", interval=1)
        up = prometheus.query('up{job="journald-bridge"}')
        assert up and up[0]["value"][1] == "1"
    finally:
        prometheus.stop()


def test_per_container_series_do_not_grow_with_container_churn(bridge, journald, containers):
    bridge.configure(metrics={"per_container": True})
    bridge.start()
    lock = threading.Lock()
    made = []

    def churn(n):
        c = containers.run(f"echo churn{n}")
        c.wait(timeout=60)
        with lock:
            made.append(c)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(
        lambda: bridge.metric("journald_bridge_lines_forwarded_total") == 100, 60, "100 lines"
    )
    assert 'container_name="' in bridge.get("/metrics")[1]
    for c in made:
        c.remove()
    wait_until(
        lambda: 'container_name="' not in bridge.get("/metrics")[1],
        30,
        "per-container series to go",
    )
    assert bridge.metric("journald_bridge_lines_forwarded_total") == 100


def test_readyz_follows_dockerd(bridge):
    bridge.start()
    assert bridge.get("/readyz") == (200, "ready\n")
    try:
        dockerd.stop()
        _, body = wait_until(
            lambda: (r := bridge.get("/readyz"))[0] == 503 and r, 60, "readyz to turn 503"
        )
        assert body == "not ready: engines down: docker (reconnecting)\n"
        assert bridge.get("/healthz") == (200, "ok\n")
        assert bridge.metric("journald_bridge_engine_up", engine="docker") == 0
        assert bridge.metric("journald_bridge_docker_up") == 0  # the alias
    finally:
        restart_dockerd_started = time.monotonic()
        dockerd.start()
    wait_until(lambda: bridge.get("/readyz")[0] == 200, 60, "readyz to turn 200")
    print(f"readyz back {time.monotonic() - restart_dockerd_started:.1f} s after dockerd started")


def test_alert_rules_pass_promtool():
    check = promtool("check", "rules", str(DEPLOY / "alerts.yml"))
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    test = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yml"],
        cwd=DEPLOY,
        capture_output=True,
        timeout=60,
    )
    assert test.returncode == 0, test.stdout.decode() + test.stderr.decode()


def test_grafana_dashboard_is_valid_json_over_known_metrics():
    dashboard = json.loads((DEPLOY.parent / "grafana" / "journald-bridge.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs and all("journald_bridge_" in e or "process_" in e for e in exprs)


@pytest.mark.parametrize("under_systemd", [False, True], ids=["terminal", "journal-stream"])
def test_a_taken_metrics_port_ends_start_up_with_one_line_and_exit_78(tmp_path, under_systemd):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        config = tmp_path / "bridge.toml"
        config.write_text(
            f'[journal]\nsocket = "{tmp_path}/journal.socket"\n'
            f'[state]\ndirectory = "{tmp_path}/state"\n[metrics]\nlisten = "{listen}"\n'
        )
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if under_systemd:  # stderr is then the journal: one entry per line, `<N>` its priority
            env["JOURNAL_STREAM"] = "8:12345"
        run = subprocess.run(
            [BRIDGE, "run", "--config", str(config)], env=env, capture_output=True, timeout=60
        )
    err = run.stderr.decode()
    assert run.returncode == 78, err
    assert "Traceback" not in err
    lines = err.splitlines()
    problems = [line for line in lines if "starting" not in line]
    assert len(lines) == 2 and len(problems) == 1, err
    line = f"metrics: cannot serve http://{listen}/metrics: Address already in use"
    if under_systemd:
        assert problems == ["<3>" + line]
    else:
        assert problems[0].endswith(" ERROR " + line)
