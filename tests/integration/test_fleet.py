"""A central journal through systemd's own journal-upload and journal-remote, and
metrics for a fleet.

Real components only. The bridge writes to the test's journald namespace; a real
systemd-journal-upload reads that namespace's directory (Debian 12's 252 has no --namespace=, so
it is `--directory=/run/log/journal/<machine-id>.<namespace>`) and sends it over loopback HTTP to
a real systemd-journal-remote: fields arrive whole, uploader restarts lose nothing (their
duplicates are counted and printed), bridge restarts under the uploader duplicate nothing.
A real Prometheus runs deploy/prometheus/fleet.yml against two real bridges, and the dashboard's
queries are run with its instance variable. The last test runs Debian's own units with the
drop-ins of deploy/fleet under systemd as PID 1 (in a container, loopback only), over HTTPS with
certificates from deploy/fleet/fleet-ca.sh.

An entry is compared whole: every field, trusted ones and both timestamps included, except
__CURSOR (the collector gives each entry a sequence number of its own).
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from systemd import journal

from tests.integration.conftest import (
    IMAGE,
    Bridge,
    expected_keys,
    free_port,
    line_keys,
    wait_until,
    writer_script,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
FLEET = ROOT / "deploy" / "fleet"
REMOTE = "/lib/systemd/systemd-journal-remote"
UPLOAD = "/lib/systemd/systemd-journal-upload"
SYSTEMD_IMAGE = "bridge-test/systemd:latest"
COMPOSE = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}


def read(reader: journal.Reader, **matches: str) -> list[dict[str, Any]]:
    try:
        for key, value in matches.items():
            reader.add_match(**{key: value})
        return list(reader)
    finally:
        reader.close()


def identity(entry: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The whole entry but its cursor: a copy at the collector has the same identity."""
    return tuple(sorted((k, repr(v)) for k, v in entry.items() if k != "__CURSOR"))


class Collector:
    """systemd-journal-remote on loopback HTTP, one output file per uploading host."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.output = workdir / "remote"
        self.output.mkdir()
        self.log_path = workdir / "remote.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [REMOTE, f"--listen-http=127.0.0.1:{self.port}", f"--output={self.output}/"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        wait_until(self._listening, 10, "systemd-journal-remote to listen")

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"journal-remote exited: {self.log_path.read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def entries(self, **matches: str) -> list[dict[str, Any]]:
        return read(journal.Reader(path=str(self.output)), **matches)


class Uploader:
    """systemd-journal-upload following one journald namespace, resuming from its state file."""

    def __init__(self, workdir: Path, namespace: str, collector: Collector) -> None:
        machine_id = Path("/etc/machine-id").read_text().strip()
        self.directory = Path(f"/run/log/journal/{machine_id}.{namespace}")
        self.url = f"http://127.0.0.1:{collector.port}"
        self.state = workdir / "upload.state"
        self.log_path = workdir / "upload.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    UPLOAD,
                    f"--url={self.url}",
                    f"--save-state={self.state}",
                    f"--directory={self.directory}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(30)
        self.process = None
        return code


@pytest.fixture
def collector(tmp_path: Path):
    instance = Collector(tmp_path)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def uploader(tmp_path: Path, journald, collector):
    instance = Uploader(tmp_path, journald.namespace, collector)
    yield instance
    if instance.process is not None:
        instance.stop(signal.SIGKILL)


def namespace_entries(journald) -> list[dict[str, Any]]:
    """Everything in the namespace: what the uploader reads (journald's own entries too)."""
    return read(journal.Reader(namespace=journald.namespace))


def wait_collected(collector: Collector, source: list[dict[str, Any]], timeout: float = 60):
    """Waits until every source entry is at the collector; returns the collector's counts."""
    wanted = {identity(e) for e in source}

    def complete():
        counts = collections.Counter(identity(e) for e in collector.entries())
        return counts if wanted <= counts.keys() else None

    with contextlib.suppress(AssertionError):  # the comparison below says what is missing
        wait_until(complete, timeout, f"{len(wanted)} entries at the collector", interval=0.5)
    time.sleep(1)  # a late duplicate would show up now
    counts = collections.Counter(identity(e) for e in collector.entries())
    lost = wanted - counts.keys()
    unexpected = counts.keys() - wanted
    assert (len(lost), len(unexpected)) == (0, 0), (sorted(lost)[:3], sorted(unexpected)[:3])
    return counts


def running(container: Any) -> bool:
    container.reload()
    return bool(container.status == "running")


def assert_once_in_namespace(journald, started: dict[str, Any], work: dict[str, int]) -> None:
    for tag, c in started.items():
        counts = line_keys(journald.messages(c.id))
        duplicated = {k: n for k, n in counts.items() if n > 1}
        lost = expected_keys(tag, work[tag]).keys() - counts.keys()
        assert (sorted(lost)[:5], len(lost), duplicated) == ([], 0, {}), tag


def test_bridge_lines_reach_the_collector_with_every_field(
    bridge, journald, containers, collector, uploader
):
    bridge.start()
    uploader.start()
    name = f"web-{containers.label}"
    c = containers.run(
        "echo hi; echo oops >&2; printf 'caf\\303\\251 \\377raw\\n'; "
        "head -c 40000 /dev/zero | tr '\\0' x; echo; echo last",
        name=name,
        labels=COMPOSE,
    )
    source = journald.wait_for_line(c.id, b"last")
    assert len(source) == 5

    def arrived():
        e = collector.entries(CONTAINER_ID_FULL=c.id)
        return len(e) >= len(source) and e

    collected = wait_until(arrived, 30, "the container's entries at the collector")
    here = read(journal.Reader(namespace=journald.namespace), CONTAINER_ID_FULL=c.id)
    assert [identity(e) for e in collected] == [identity(e) for e in here]

    by_message = {e["MESSAGE"]: e for e in collected}
    hi, oops = by_message["hi"], by_message["oops"]
    assert hi["CONTAINER_NAME"] == name and hi["SYSLOG_IDENTIFIER"] == name
    assert hi["CONTAINER_ID"] == c.id[:12] and hi["CONTAINER_ID_FULL"] == c.id
    assert hi["IMAGE_NAME"] == IMAGE and hi["PRIORITY"] == 6 and oops["PRIORITY"] == 3
    assert (hi["CONTAINER_STREAM"], oops["CONTAINER_STREAM"]) == ("stdout", "stderr")
    assert (hi["COMPOSE_PROJECT"], hi["COMPOSE_SERVICE"]) == ("shop", "web")
    assert hi["_HOSTNAME"] == socket.gethostname() and hi["SYSLOG_TIMESTAMP"]
    # json-file has already replaced invalid UTF-8 with U+FFFD; the 40 KB line is one entry
    assert set(by_message) == {"hi", "oops", "caf\u00e9 \ufffdraw", "x" * 40000, "last"}

    # The README's query, with journalctl, on the collector's split-by-host output: one file
    # per uploading host, named after its address.
    assert [p.name for p in collector.output.iterdir()] == ["remote-127.0.0.1.journal"]
    out = subprocess.run(
        [
            "journalctl",
            "-D",
            str(collector.output),
            "-o",
            "json",
            "--no-pager",
            f"CONTAINER_NAME={name}",
            f"_HOSTNAME={socket.gethostname()}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert {json.loads(line)["MESSAGE"] for line in out.splitlines()} >= {"hi", "oops", "last"}


@pytest.mark.slow
def test_uploader_restarts_lose_nothing_and_their_duplicates_are_counted(
    bridge, journald, containers, collector, uploader
):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")
    bridge.start()
    uploader.start()
    # at least 15 s of lines (60 pauses of 0.25 s each), so every restart falls mid-stream
    # even when a loaded machine makes each stop and start of the uploader take a second
    work = {f"u{n}": 12000 for n in range(3)}
    started = {tag: containers.run(writer_script(tag, n, pace="0.25")) for tag, n in work.items()}

    restarts, mid_stream, collected = 0, 0, [0]
    while restarts < 5:
        time.sleep(rng.uniform(0.3, 0.8))
        assert uploader.stop(signal.SIGTERM) == 0
        restarts += 1
        mid_stream += any(running(c) for c in started.values())
        collected.append(len(collector.entries()))
        uploader.start()
    for c in started.values():
        c.wait(timeout=300)
    for tag, c in started.items():
        journald.wait_messages(c.id, work[tag], timeout=120)
    bridge.stop()  # the namespace holds no more than this from now on

    assert_once_in_namespace(journald, started, work)
    source = namespace_entries(journald)
    counts = wait_collected(collector, source)
    duplicates = sum(n - 1 for n in counts.values())
    print(
        f"uploader SIGTERM + start x{restarts} ({mid_stream} while containers wrote): "
        f"{len(source)} entries, 0 lost, {duplicates} duplicates at the collector "
        f"({duplicates / restarts:.1f} per restart)"
    )
    assert mid_stream == restarts, f"{mid_stream} of {restarts} restarts while containers wrote"
    assert collected == sorted(set(collected)), f"no upload between two restarts: {collected}"
    # It resumes *at* the last entry the collector acknowledged, not after it.
    assert duplicates <= restarts


@pytest.mark.slow
def test_bridge_restarts_under_a_reading_uploader_still_write_each_line_once(
    bridge, journald, containers, collector, uploader
):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")
    uploader.start()
    bridge.start()
    work = {f"b{n}": 8000 for n in range(3)}
    started = {tag: containers.run(writer_script(tag, n)) for tag, n in work.items()}
    for n in range(4):
        time.sleep(rng.uniform(0.3, 1.2))
        if n % 2:
            bridge.kill9()
        else:
            assert bridge.stop() == 0
        bridge.start(wait_ready=rng.random() < 0.5)
    for c in started.values():
        c.wait(timeout=300)
    for tag, c in started.items():
        journald.wait_messages(c.id, work[tag], timeout=120)
    bridge.stop()

    assert_once_in_namespace(journald, started, work)
    source = namespace_entries(journald)
    counts = wait_collected(collector, source)
    duplicates = sum(n - 1 for n in counts.values())
    lines = sum(work.values())
    print(
        f"bridge SIGTERM/kill -9 x4 under the uploader: {lines} lines once in the namespace, "
        f"{len(source)} entries at the collector, {duplicates} duplicates"
    )
    assert duplicates == 0


# --- Metrics for a fleet: file_sd, alerts that name the instance, the dashboard's variable -----

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "journald-bridge.json"
SELECTOR = re.compile(r"\b(journald_bridge_\w+|process_\w+|up)\b(\{[^}]*\})?")


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_every_dashboard_query_selects_by_the_instance_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    exprs = dashboard_exprs()
    selectors = [m for e in exprs for m in SELECTOR.finditer(e)]
    assert len(selectors) >= len(exprs)
    assert [
        m.group(0) for m in selectors if 'instance=~"$instance"' not in (m.group(2) or "")
    ] == []


def test_fleet_prometheus_config_and_its_example_targets_pass_promtool(tmp_path):
    shutil.copytree(PROMETHEUS, tmp_path / "prometheus")
    example = tmp_path / "prometheus" / "targets" / "journald-bridge.yml.example"
    # promtool checks every file the file_sd glob matches; the example must not match as shipped
    example.rename(example.with_name("journald-bridge-example.yml"))
    check = run("promtool", "check", "config", str(tmp_path / "prometheus" / "fleet.yml"))
    assert "SUCCESS: 1 rule files found" in check


def prometheus_query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{expr}: {exc.read().decode()}") from exc
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_a_prometheus_on_fleet_yml_scrapes_two_bridges_and_the_dashboard_tells_them_apart(
    bridge, journald, containers, tmp_path
):
    """Two real bridges listed in a file_sd targets file; Prometheus runs the shipped fleet.yml
    and alerts.yml (intervals shortened); each dashboard query with $instance set to one
    bridge returns that bridge only."""
    second = Bridge(tmp_path / "second", journald, uuid.uuid4().hex[:12])
    (tmp_path / "second").mkdir()
    bridge.start()
    second.start()
    try:
        c = containers.run("for i in $(seq 1 30); do echo l$i; done")
        journald.wait_messages(c.id, 30)
        config = tmp_path / "prometheus"
        shutil.copytree(PROMETHEUS, config)
        fleet = (config / "fleet.yml").read_text()
        shortened = fleet.replace("scrape_interval: 15s", "scrape_interval: 1s")
        shortened = shortened.replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        assert shortened.count(": 1s") == 2
        (config / "fleet.yml").write_text(shortened)
        first_target, second_target = f"127.0.0.1:{bridge.port}", f"127.0.0.1:{second.port}"
        (config / "targets" / "journald-bridge-test.yml").write_text(
            f"- targets: ['{first_target}', '{second_target}']\n  labels: {{site: test}}\n"
        )
        port = free_port()
        with open(tmp_path / "prometheus.log", "wb") as log:
            prometheus = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config / 'fleet.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:

            def scraped():
                with contextlib.suppress(OSError):
                    series = prometheus_query(
                        port, 'journald_bridge_lines_forwarded_total{job="journald-bridge"}'
                    )
                    return {s["metric"]["instance"] for s in series} == {
                        first_target,
                        second_target,
                    } and any(s["value"][1] == "30" for s in series)
                return False

            wait_until(scraped, 60, "both bridges scraped, 30 lines forwarded", interval=1)
            time.sleep(2)  # a few more samples for the rates
            up = prometheus_query(port, 'up{job="journald-bridge", site="test"}')
            assert sorted(s["metric"]["instance"] for s in up) == sorted(
                [first_target, second_target]
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as r:
                rules = [x for g in json.loads(r.read())["data"]["groups"] for x in g["rules"]]
            assert len(rules) == 6 and {x["health"] for x in rules} == {"ok"}

            # The dashboard's variable lists both; each query, given one, sees only that one.
            instances = prometheus_query(port, "count by (instance) (journald_bridge_build_info)")
            assert {s["metric"]["instance"] for s in instances} == {first_target, second_target}
            for chosen, other in ((first_target, second_target), (second_target, first_target)):
                for expr in dashboard_exprs():
                    query = (
                        expr.replace("$instance", chosen)
                        .replace("$__rate_interval", "10s")
                        .replace("$__range", "1m")
                    )
                    result = prometheus_query(port, query)
                    seen = {s["metric"].get("instance") for s in result} - {None}
                    assert other not in seen, (expr, seen)
            lines = 'sum(journald_bridge_lines_forwarded_total{instance=~"$instance"})'
            for chosen, expected in ((first_target, "30"), (second_target, "0"), (".*", "30")):
                result = prometheus_query(port, lines.replace("$instance", chosen))
                assert result[0]["value"][1] == expected
        finally:
            prometheus.terminate()
            prometheus.wait(30)
    finally:
        second.stop()


# --- Debian's units with deploy/fleet's drop-ins, under systemd as PID 1 ----------------------


def run(*args: str, check: bool = True, timeout: float = 120, **kwargs: Any) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result.stdout


class Box:
    def __init__(self, name: str) -> None:
        self.name = name

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> str:
        return run("docker", "exec", self.name, "sh", "-c", script, check=check, timeout=timeout)

    def show(self, unit: str, prop: str) -> str:
        return self.sh(f"systemctl show -p {prop} --value {unit}").strip()

    def send(self, *messages: str) -> None:
        """Bridge-like entries into the box's journal, over journald's native socket."""
        script = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
            "for m in sys.argv[1:]:\n"
            "    s.sendto(b'MESSAGE=%s\\nCONTAINER_NAME=web\\nIMAGE_NAME=nginx:1\\n' % m.encode(),"
            " '/run/systemd/journal/socket')\n"
        )
        run("docker", "exec", self.name, "python3", "-c", script, *messages)

    def collected(self, hostname: str) -> list[str]:
        out = self.sh(
            "journalctl -D /var/log/journal/remote -o json --no-pager "
            f"CONTAINER_NAME=web _HOSTNAME={hostname}"
        )
        return [json.loads(line)["MESSAGE"] for line in out.splitlines() if line.strip()]

    def duplicates(self) -> tuple[int, int]:
        """(entries, copies beyond the first) of everything collected, whatever its source."""
        out = self.sh("journalctl -D /var/log/journal/remote -o json --no-pager")
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        seen = collections.Counter(
            json.dumps(
                {k: v for k, v in e.items() if k not in ("__CURSOR", "__SEQNUM")}, sort_keys=True
            )
            for e in entries
        )
        return len(entries), sum(n - 1 for n in seen.values())

    def connects(self, port: int = 19532) -> bool:
        probe = (
            "import socket; s = socket.socket(); s.settimeout(3)\n"
            f"try:\n    s.connect(('127.0.0.1', {port})); print('yes')\n"
            "except OSError:\n    print('no')\n"
        )
        return run("docker", "exec", self.name, "python3", "-c", probe).strip() == "yes"


@pytest.fixture
def fleet_box(tmp_path: Path, label: str):
    pki = tmp_path / "pki"
    ca = str(FLEET / "fleet-ca.sh")
    hostname = f"host-{label}"
    run(ca, str(pki), "init")
    run(ca, str(pki), "collector", "logs.fleet.test", "localhost", "127.0.0.1")
    run(ca, str(pki), "host", hostname)
    name = f"jb-fleet-{uuid.uuid4().hex[:8]}"
    run(
        "docker", "run", "-d", "--name", name, "--hostname", hostname,
        "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
        "--security-opt", "apparmor=unconfined", "--network", "none",
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--cgroupns=host",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "-v", f"{ROOT}:/src:ro", "-v", f"{pki}:/pki:ro",
        SYSTEMD_IMAGE, "/lib/systemd/systemd",
    )  # fmt: skip
    box = Box(name)
    try:
        wait_until(
            lambda: (
                box.sh("systemctl is-system-running", check=False).strip()
                in ("running", "degraded")
            ),
            60,
            "systemd to boot",
        )
        # systemd marks / shared at boot on a host, but leaves that to the container manager in
        # a container; credentials (LoadCredential=) are mounted from a namespace of their own
        # and reach the service only through a shared /.
        box.sh("mount --make-rshared /")
        yield box, hostname
    finally:
        run("docker", "rm", "-f", name, check=False)


@pytest.mark.slow
def test_debian_units_with_the_fleet_drop_ins_over_https(fleet_box):
    box, hostname = fleet_box
    assert "systemd-journal-remote" in box.sh("dpkg-query -W systemd-journal-remote"), (
        "the systemd image predates systemd-journal-remote: run scripts/setup-test.sh"
    )
    box.sh("/src/deploy/fleet/install.sh collector /pki logs.fleet.test")
    box.sh("/src/deploy/fleet/install.sh host /pki $(hostname) https://localhost:19532")
    verify = box.sh(
        "systemd-analyze verify systemd-journal-remote.service systemd-journal-remote.socket "
        "systemd-journal-upload.service journal-remote-vacuum.service "
        "journal-remote-vacuum.timer 2>&1",
        check=False,
    )
    # The image has no man pages; anything else systemd-analyze says is a finding.
    assert [line for line in verify.splitlines() if "Command 'man " not in line] == []
    # Test-only: retry after 1 s instead of 10 s, so the outage below is short.
    box.sh(
        "mkdir -p /etc/systemd/system/systemd-journal-upload.service.d && printf "
        "'[Service]\\nRestartSec=1s\\n' > /etc/systemd/system/systemd-journal-upload.service.d/"
        "zz-test.conf && systemctl daemon-reload"
    )
    box.sh("systemctl enable --now systemd-journal-remote.socket journal-remote-vacuum.timer")
    box.sh("systemctl enable --now systemd-journal-upload")

    # Over HTTPS, with the certificates from fleet-ca.sh handed over as credentials.
    box.send("one", "two")
    wait_until(lambda: box.collected(hostname) == ["one", "two"], 30, "two entries, collected")
    assert box.sh("ls /var/log/journal/remote").split() == ["remote-127.0.0.1.journal"]
    assert "Certificate checking disabled" in box.sh(
        "journalctl -u systemd-journal-remote -o cat --no-pager"
    )

    # An uploader restart loses nothing; it sends the last entry again.
    box.sh("systemctl restart systemd-journal-upload")
    box.send("three")
    wait_until(lambda: "three" in box.collected(hostname), 30, "the entry after a restart")
    after_restart = box.collected(hostname)
    print(f"systemctl restart systemd-journal-upload: the collector has {after_restart}")
    assert after_restart in (["one", "two", "two", "three"], ["one", "two", "three"])

    # A collector outage longer than Debian's start limit (5 failures in 10 s): the uploader
    # keeps retrying, and delivers what was written meanwhile once the collector is back.
    box.sh("systemctl stop systemd-journal-remote.socket systemd-journal-remote.service")
    box.send("four", "five")
    wait_until(
        lambda: int(box.show("systemd-journal-upload", "NRestarts")) >= 7, 60, "7 failed uploads"
    )
    assert box.show("systemd-journal-upload", "ActiveState") != "failed"
    box.sh("systemctl start systemd-journal-remote.socket")
    wait_until(lambda: "five" in box.collected(hostname), 30, "the entries of the outage")
    assert box.collected(hostname)[-2:] == ["four", "five"]
    # The uploader follows the box's whole journal: the entry sent again after each resume is
    # whichever came last, often one of systemd's own. One restart, one resume after the outage.
    collected, duplicates = box.duplicates()
    print(
        f"Debian's units: {collected} entries collected, {duplicates} duplicates after a restart and an outage"
    )
    assert duplicates <= 2

    # Access control comes from the network: the socket's IPAddressAllow= list is enforced.
    assert box.connects()
    box.sh(
        "printf '[Socket]\\nIPAddressAllow=\\nIPAddressAllow=192.0.2.1\\n' > "
        "/etc/systemd/system/systemd-journal-remote.socket.d/zz-test.conf && "
        "systemctl daemon-reload && "
        "systemctl stop systemd-journal-remote.service systemd-journal-remote.socket && "
        "systemctl start systemd-journal-remote.socket"
    )
    assert not box.connects()

    box.sh("systemctl start journal-remote-vacuum.service")
    assert box.show("journal-remote-vacuum.service", "Result") == "success"

    # The bridge's own drop-in for a central Prometheus loads with the unit as it ships (the
    # bridge is not installed here: only its binary's absence may be reported).
    box.sh(
        "cp /src/deploy/journald-bridge.service /etc/systemd/system/ && mkdir -p "
        "/etc/systemd/system/journald-bridge.service.d && cp "
        "/src/deploy/fleet/host/journald-bridge.service.d/metrics.conf "
        "/etc/systemd/system/journald-bridge.service.d/ && systemctl daemon-reload"
    )
    verify = box.sh("systemd-analyze verify journald-bridge.service 2>&1", check=False)
    assert [
        line
        for line in verify.splitlines()
        if "/opt/journald-bridge/bin/journald-bridge" not in line and "Command 'man " not in line
    ] == []
    environment = box.show("journald-bridge.service", "Environment")
    assert "JOURNALD_BRIDGE_METRICS__LISTEN=10.0.0.5:9580" in environment
    assert "10.0.0.2/32" in box.show("journald-bridge.service", "IPAddressAllow")
