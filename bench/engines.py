"""Issue 15's two-engine scenario: Docker and Podman writing at once, each engine's CPU per line.

One bridge process with the default `docker` engine and a `[[engines]]` Podman engine (both
`source = "auto"`: on these local engines the bridge reads their log files, json-file and
k8s-file). N containers on each engine wait at a gate (a file in a directory bind-mounted
read-only into all of them); once every one runs, the CPU meter starts and the gate opens, so
container creation and start-up are not counted. Each writes M lines and a sentinel, then
sleeps, so Podman's conmon processes (one per container, re-parented to PID 1, whose CPU would
be lost with them) are still there to be read when the meter stops.

Reported: the wall time from the gate until every line is in the journal and lines/s (overall
and per engine, from each engine's last sentinel), the bridge's CPU per line (of all lines),
and each engine's own CPU per line of its lines: dockerd (and, beside it, the containerd shims),
Podman's conmon processes plus its API service. Every line is counted in the journal by
CONTAINER_ENGINE and CONTAINER_ID_FULL afterwards.

    .venv/bin/python bench/engines.py --reps 1 --containers 2 --lines 20000
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
from inner import Disturbed, live_pid, remove_labelled, wait_watching
from measure import (
    IMAGE,
    LABEL,
    BridgeProcess,
    CpuMeter,
    cpu_text,
    pid_of,
)
from systemd import journal

PODMAN_SOCKET = "/run/podman/podman.sock"
PODMAN_IMAGE = "localhost/bridge-test/busybox:latest"
ENGINES = ("docker", "podman")
PAD = "x" * 80  # ~100-byte lines with the tag and sequence number, as run.py's
CONTAINERS, LINES = 2, 20000
IDLE_SECONDS = 3.0
RETRIES = 2  # runs spoiled by an engine restart (make test restarts both) are run again
# Figures per process group: a CpuMeter name, or the prefix of several (one per container).
GROUPS = {
    "bridge": "bridge",
    "journald": "journald",
    "dockerd": "dockerd",
    "docker_shims": "shim",
    "conmon": "conmon",
    "podman_service": "podman_service",
}


def gated_script(tag: str, count: int) -> str:
    """run.py's line_script (awk, unpaced, then END-tag), started once /gate/go exists; the
    container then sleeps, to be removed by the bench."""
    return (
        "while [ ! -e /gate/go ]; do sleep 0.05; done; "
        f"awk 'BEGIN{{for(i=1;i<={count};i++) printf \"{tag} %08d {PAD}\\n\", i}}'; "
        f"echo END-{tag}; exec sleep 3600"
    )


# -- processes ---------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def podman_service_pid() -> int:
    """The `podman system service` process serving PODMAN_SOCKET (0 when none)."""
    for pid in _pids():
        args = _cmdline(pid)
        if (
            args
            and args[0].rsplit("/", 1)[-1] == "podman"
            and args[1:3] == ["system", "service"]
            and any(PODMAN_SOCKET in a for a in args)
        ):
            return pid
    return 0


def pids_by_container(comm_prefix: str, flag: str, ids: list[str]) -> dict[str, int]:
    """Processes named `comm_prefix...` whose command line has `flag <container id>`."""
    wanted = set(ids)
    found: dict[str, int] = {}
    for pid in _pids():
        try:
            if not Path(f"/proc/{pid}/comm").read_text().startswith(comm_prefix):
                continue
        except OSError:
            continue
        args = _cmdline(pid)
        for i, arg in enumerate(args[:-1]):
            if arg == flag and args[i + 1] in wanted:
                found[args[i + 1]] = pid
    return found


# -- the bench ---------------------------------------------------------------------------------


class TwoEngines:
    """A bridge with both engines and the containers of one run on each."""

    def __init__(self, workdir: Path, label: str) -> None:
        self.workdir = workdir
        self.label = label
        self.clients = {
            "docker": docker.from_env(version="1.41", timeout=300, max_pool_size=64),
            "podman": docker.DockerClient(
                base_url=f"unix://{PODMAN_SOCKET}", version="1.41", timeout=300
            ),
        }
        self.bridge = BridgeProcess(workdir, label)
        with self.bridge.config.open("a") as config:
            config.write(f'[[engines]]\nname = "podman"\nhost = "unix://{PODMAN_SOCKET}"\n')

    def start_bridge(self) -> None:
        self.bridge.start()
        self.wait_engines_up()

    def wait_engines_up(self) -> None:
        deadline = time.monotonic() + 180  # a restarted dockerd can take a while
        while self.bridge.metric("journald_bridge_engine_up") < len(ENGINES):
            if time.monotonic() > deadline:
                raise TimeoutError("both engines did not come up in the bridge")
            time.sleep(0.1)

    def run_containers(self, engine: str, scripts: list[str], gate: Path) -> list[Any]:
        extra: dict[str, Any] = {"log_config": {"type": "json-file"}} if engine == "docker" else {}
        return [
            self.clients[engine].containers.run(
                IMAGE if engine == "docker" else PODMAN_IMAGE,
                ["sh", "-c", script],
                detach=True,
                network_disabled=True,  # no libnetwork endpoint: see tests/integration/dockerd.py
                network_mode="none",
                labels={LABEL: self.label},
                volumes={str(gate): {"bind": "/gate", "mode": "ro"}},
                **extra,
            )
            for script in scripts
        ]

    def wait_running(self, engine: str, containers: list[Any], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for c in containers:
            while True:
                c.reload()
                if c.status == "running":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{engine} container {c.id[:12]} is {c.status}")
                time.sleep(0.1)

    def cleanup(self) -> None:
        remove_labelled(self.label)  # docker's, waiting for dockerd if it is being restarted
        with contextlib.suppress(docker.errors.APIError, OSError):
            for c in self.clients["podman"].containers.list(
                all=True, filters={"label": f"{LABEL}={self.label}"}
            ):
                with contextlib.suppress(docker.errors.APIError):
                    c.remove(force=True)
        listed = subprocess.run(  # whatever the API could not remove
            ["podman", "ps", "-aq", "--filter", f"label={LABEL}={self.label}"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        if listed:
            subprocess.run(["podman", "rm", "-f", *listed], capture_output=True, timeout=120)

    def disturbed(self, pids: dict[str, int]) -> str | None:
        """Why a run cannot finish or its figures mean nothing, if so."""
        assert self.bridge.process is not None
        if self.bridge.process.poll() is not None:
            return f"the bridge exited ({self.bridge.process.returncode})"
        for name, pid in pids.items():
            if name != "bridge" and pid and not Path(f"/proc/{pid}").exists():
                return f"{name} exited (make test restarts dockerd and Podman's service)"
        return None

    def retrying(self, containers: int, lines: int, idle_seconds: float) -> dict[str, Any]:
        """once(), again (up to RETRIES times) when an engine was restarted meanwhile."""
        for attempt in range(RETRIES + 1):
            engines = (live_pid("dockerd"), podman_service_pid())
            try:
                return self.once(containers, lines, idle_seconds)
            except Exception as exc:
                if attempt == RETRIES or not (
                    isinstance(exc, Disturbed)
                    or (live_pid("dockerd"), podman_service_pid()) != engines
                ):
                    raise
                print(f"  engines: run spoiled ({exc}); once more", flush=True)
                self.cleanup()
                self.wait_engines_up()
        raise AssertionError("unreachable")

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def attached(self) -> dict[str, str]:
        """journald_bridge_containers_attached samples, by their labels (engine, source)."""
        url = f"http://127.0.0.1:{self.bridge.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            lines = r.read().decode().splitlines()
        prefix = "journald_bridge_containers_attached{"
        return {
            line[len(prefix) : line.index("}")]: line.rsplit(" ", 1)[1]
            for line in lines
            if line.startswith(prefix)
        }

    def once(
        self, containers: int, lines: int, idle_seconds: float = IDLE_SECONDS
    ) -> dict[str, Any]:
        tag = f"e{uuid.uuid4().hex[:6]}"
        gate = Path(tempfile.mkdtemp(prefix="gate-", dir=self.workdir))
        gate.chmod(0o755)
        tags = {e: [f"{tag}-{e[0]}{n}" for n in range(containers)] for e in ENGINES}
        made = {
            e: self.run_containers(e, [gated_script(t, lines) for t in tags[e]], gate)
            for e in ENGINES
        }
        for e in ENGINES:
            self.wait_running(e, made[e])
        ids = {e: [c.id for c in made[e]] for e in ENGINES}
        conmons = pids_by_container("conmon", "-c", ids["podman"])
        shims = pids_by_container("containerd-shim", "-id", ids["docker"])
        if len(conmons) != containers:
            raise RuntimeError(f"found {len(conmons)} conmon processes for {containers} containers")
        assert self.bridge.process is not None
        pids = {
            "bridge": self.bridge.process.pid,
            "journald": pid_of("systemd-journal"),
            "dockerd": live_pid("dockerd"),
            "podman_service": podman_service_pid(),
            **{f"conmon{n}": pid for n, pid in enumerate(conmons.values())},
            **{f"shim{n}": pid for n, pid in enumerate(shims.values())},
        }
        idle = CpuMeter(pids)  # what these processes use meanwhile without this run's lines
        idle.start()
        time.sleep(idle_seconds)
        idle.stop()
        meter = CpuMeter(pids)
        meter.start()
        metered = time.monotonic()
        started = time.time()
        (gate / "go").touch()
        sentinels = [f"END-{t}" for e in ENGINES for t in tags[e]]
        done = wait_watching(sentinels, 600, lambda: self.disturbed(pids))
        try:
            used = meter.stop()
            metered = time.monotonic() - metered
        except FileNotFoundError as exc:  # dockerd or the podman service restarted meanwhile
            raise Disturbed(f"a measured process exited during the run: {exc}") from exc
        each_done = {e: max(received_at(f"END-{t}") for t in tags[e]) for e in ENGINES}
        attached = self.attached()
        counted = {e: sum(journal_count(e, cid) for cid in ids[e]) for e in ENGINES}
        self.cleanup()
        shutil.rmtree(gate, ignore_errors=True)

        per_engine_lines = containers * (lines + 1)
        total = per_engine_lines * len(ENGINES)
        raw = grouped(meter.seconds)
        idle_rate = {k: v / idle_seconds for k, v in grouped(idle.seconds).items()}
        net = {k: max(0.0, v - idle_rate[k] * metered) for k, v in raw.items()}
        elapsed = done - started
        return {
            "seconds": round(elapsed, 2),
            "lines": total,
            "lines_per_second": round(total / elapsed),
            "complete": all(counted[e] == per_engine_lines for e in ENGINES),
            "journal_counts": counted,
            "attached": attached,
            "cpu_percent": used,
            "cpu_seconds": {k: round(v, 3) for k, v in raw.items()},
            "idle_cpu_percent": {k: round(v * 100, 1) for k, v in idle_rate.items()},
            "per_engine": {
                e: {
                    "lines": per_engine_lines,
                    "seconds": round(each_done[e] - started, 2),
                    "lines_per_second": round(per_engine_lines / (each_done[e] - started)),
                }
                for e in ENGINES
            },
            "us_per_line": per_line(raw, per_engine_lines),
            "us_per_line_net_of_idle": per_line(net, per_engine_lines),
        }


def grouped(seconds: dict[str, float]) -> dict[str, float]:
    """A CpuMeter's seconds per process, summed into GROUPS."""
    return {
        name: sum(v for k, v in seconds.items() if k.startswith(prefix))
        for name, prefix in GROUPS.items()
    }


def per_line(cpu: dict[str, float], engine_lines: int) -> dict[str, float]:
    """µs of CPU per line: the bridge and journald per line of both engines, each engine's
    processes per line of its own."""
    total = engine_lines * len(ENGINES)
    us = {k: v * 1e6 for k, v in cpu.items()}
    return {
        "bridge": round(us["bridge"] / total, 1),
        "journald": round(us["journald"] / total, 1),
        "docker_engine": round(us["dockerd"] / engine_lines, 1),
        "dockerd": round(us["dockerd"] / engine_lines, 1),
        "docker_shims": round(us["docker_shims"] / engine_lines, 1),
        "podman_engine": round((us["conmon"] + us["podman_service"]) / engine_lines, 1),
        "conmon": round(us["conmon"] / engine_lines, 1),
        "podman_service": round(us["podman_service"] / engine_lines, 1),
    }


def received_at(message: str) -> float:
    """When journald received the (first) entry with this MESSAGE, wall clock."""
    reader = journal.Reader()
    try:
        reader.add_match(MESSAGE=message)
        entry = reader.get_next()
        return float(entry["__REALTIME_TIMESTAMP"].timestamp()) if entry else float("nan")
    finally:
        reader.close()


def journal_count(engine: str, cid: str) -> int:
    """Entries of one container of one engine in the journal (journalctl: fast, in C)."""
    out = subprocess.run(
        ["journalctl", "-q", "-o", "cat", f"CONTAINER_ENGINE={engine}", f"CONTAINER_ID_FULL={cid}"],
        capture_output=True,
        timeout=300,
    ).stdout
    return out.count(b"\n")


def median_of(runs: list[dict[str, Any]], *keys: str) -> float:
    def get(run: dict[str, Any]) -> float:
        value: Any = run
        for key in keys:
            value = value[key]
        return float(value)

    return float(statistics.median(get(r) for r in runs))


def measure(
    reps: int = 1,
    containers: int = CONTAINERS,
    lines: int = LINES,
    idle_seconds: float = IDLE_SECONDS,
) -> tuple[dict[str, Any], str]:
    """Runs the scenario `reps` times with a bridge of its own; (figures, markdown snippet).

    The figures hold every run and the medians; the snippet is a heading, one summary line
    and a table per engine, for bench/results.md.
    """
    label = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="jb-bench-engines-"))
    bench = TwoEngines(workdir, label)
    runs: list[dict[str, Any]] = []
    try:
        bench.start_bridge()
        try:
            for rep in range(reps):
                run = bench.retrying(containers, lines, idle_seconds)
                runs.append(run)
                print(
                    f"  engines rep {rep + 1}: {run['lines_per_second']:,} lines/s in "
                    f"{run['seconds']} s; complete {run['complete']}; cpu {cpu_text(run['cpu_percent'])}",
                    flush=True,
                )
        finally:
            bench.bridge.stop()
    finally:
        bench.cleanup()
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    per_line_keys = list(runs[0]["us_per_line"])
    med: dict[str, Any] = {
        "seconds": median_of(runs, "seconds"),
        "lines_per_second": median_of(runs, "lines_per_second"),
        "per_engine": {
            e: {k: median_of(runs, "per_engine", e, k) for k in ("seconds", "lines_per_second")}
            for e in ENGINES
        },
        "us_per_line": {k: median_of(runs, "us_per_line", k) for k in per_line_keys},
        "us_per_line_net_of_idle": {
            k: median_of(runs, "us_per_line_net_of_idle", k) for k in per_line_keys
        },
    }
    figures: dict[str, Any] = {
        "containers_per_engine": containers,
        "lines_per_container": lines,
        "reps": reps,
        "complete": all(r["complete"] for r in runs),
        "median": med,
        "runs": runs,
    }
    d, p = med["per_engine"]["docker"], med["per_engine"]["podman"]
    us, net = med["us_per_line"], med["us_per_line_net_of_idle"]
    total = runs[0]["lines"]
    engine_lines = containers * (lines + 1)
    summary = (
        f"two engines ({containers} containers on each of Docker and Podman x {lines:,} lines, "
        f"at once): {total:,} lines in {med['seconds']:.1f} s, {med['lines_per_second']:,.0f} "
        f"lines/s (docker's done after {d['seconds']:.1f} s, podman's after {p['seconds']:.1f} s); "
        f"CPU per line, µs: bridge {us['bridge']:.1f}, journald {us['journald']:.1f}; "
        f"docker: dockerd {us['dockerd']:.1f} (net of idle {net['dockerd']:.1f}; "
        f"shims {us['docker_shims']:.1f}); podman: conmon {us['conmon']:.1f} + service "
        f"{us['podman_service']:.1f} = {us['podman_engine']:.1f} (net {net['podman_engine']:.1f})"
        f"{'' if figures['complete'] else '; LINES MISSING'} (median of {reps})"
    )
    figures["summary"] = summary
    markdown = "\n".join(
        [
            "### Two engines at once (issue 15)",
            "",
            f"- {summary}",
            "",
            "| process | lines it is charged | CPU µs/line | net of its idle rate |",
            "|---|---:|---:|---:|",
            f"| bridge | {total:,} (both engines) | {us['bridge']:.1f} | {net['bridge']:.1f} |",
            f"| journald | {total:,} | {us['journald']:.1f} | {net['journald']:.1f} |",
            f"| docker: dockerd | {engine_lines:,} | {us['dockerd']:.1f} | {net['dockerd']:.1f} |",
            f"| docker: containerd shims | {engine_lines:,} | {us['docker_shims']:.1f} | "
            f"{net['docker_shims']:.1f} |",
            f"| podman: conmon | {engine_lines:,} | {us['conmon']:.1f} | {net['conmon']:.1f} |",
            f"| podman: API service | {engine_lines:,} | {us['podman_service']:.1f} | "
            f"{net['podman_service']:.1f} |",
            f"| podman: conmon + service | {engine_lines:,} | {us['podman_engine']:.1f} | "
            f"{net['podman_engine']:.1f} |",
            "",
        ]
    )
    return figures, markdown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--containers", type=int, default=CONTAINERS, help="per engine")
    parser.add_argument("--lines", type=int, default=LINES, help="per container")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=IDLE_SECONDS,
        help="how long each process's idle rate is measured before the gate opens",
    )
    parser.add_argument("--markdown", action="store_true", help="print the snippet as well")
    args = parser.parse_args()
    figures, markdown = measure(args.reps, args.containers, args.lines, args.idle_seconds)
    print(figures["summary"])
    if args.markdown:
        print(markdown)
    return 0 if figures["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
