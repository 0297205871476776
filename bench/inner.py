"""Issue 16's inner-journal figures: CPU per inner entry, and a 20,000-entry catch-up against the
stdout path.

- inner: a systemd container (systemd as PID 1, its own journald) is created while the bridge
  runs, and followed (a marker entry reaches the host journal); the bridge stops; 20,000 entries
  and a sentinel go into the container's journal (`systemd-cat`, one stream, ~100-byte messages as
  run.py's lines); the bridge starts, and the catch-up is timed from its start until the sentinel
  is in the host journal (CONTAINER_STREAM=journal).
- stdout: a busybox container writes 20,000 lines and a sentinel to stdout (run.py's line_script
  style) and exits while the bridge is stopped; the bridge starts; timed the same way.

CPU: the bridge's process tree, its own time and its children's (inner journals are parsed in a
worker process per container: the live ones' time and the reaped ones' cutime), from the moment
the bridge says its engine is up until the sentinel arrived (as run.py's catch-up), and also from
its launch (Python start-up, read-back and the worker's own start included); journald and dockerd
over the same span. Afterwards every entry is counted in the host journal.

    .venv/bin/python bench/inner.py --reps 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
from measure import IMAGE, LABEL, BridgeProcess, CpuMeter, pid_of, wait_for_messages

SYSTEMD_IMAGE = "bridge-test/systemd:latest"
PAD = "x" * 80  # ~100-byte messages with the tag and sequence number, as run.py's lines
ENTRIES = 20000
RETRIES = 2  # runs spoiled by a dockerd restart (make test restarts a hung one) are run again
HZ = os.sysconf("SC_CLK_TCK")


# -- processes ---------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def live_pid(comm: str) -> int:
    """The oldest live (not zombie) process named `comm`; 0 when none."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if stat and name == comm and stat[0] != "Z":
            found.append((int(stat[19]), int(entry.name)))
    return min(found)[1] if found else 0


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process: `own` (all its threads) and `children` (its reaped children's
    cutime/cstime, plus every live descendant's time and its own reaped children's)."""
    stats: dict[int, list[str]] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    if pid not in stats:
        raise FileNotFoundError(f"/proc/{pid}")
    own = stats[pid]
    total_children = (int(own[13]) + int(own[14])) / HZ
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        s = stats[child]
        total_children += sum(int(v) for v in s[11:15]) / HZ
        todo.extend(children.get(child, []))
    return {"own": (int(own[11]) + int(own[12])) / HZ, "children": total_children}


class TreeMeter:
    """A CpuMeter (journald, dockerd) plus the bridge's process tree, over the same span."""

    def __init__(self, bridge_pid: int) -> None:
        self.bridge_pid = bridge_pid
        self.flat = CpuMeter(
            {"journald": pid_of("systemd-journal"), "dockerd": live_pid("dockerd")}
        )
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self.seconds: dict[str, float] = {}
        self.since_launch: dict[str, float] = {}
        self.percent: dict[str, float] = {}

    def start(self) -> None:
        self.flat.start()
        self._start = tree_cpu(self.bridge_pid)
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        end = tree_cpu(self.bridge_pid)
        elapsed = time.monotonic() - self._t0
        flat = self.flat.stop()
        self.since_launch = {
            "bridge": end["own"],
            "workers": end["children"],
            "bridge_total": end["own"] + end["children"],
        }
        self.seconds = {
            "bridge": end["own"] - self._start["own"],
            "workers": end["children"] - self._start["children"],
        }
        self.seconds["bridge_total"] = self.seconds["bridge"] + self.seconds["workers"]
        self.seconds.update(self.flat.seconds)
        self.percent = {k: round(v / elapsed * 100, 1) for k, v in self.seconds.items()}
        self.percent["machine_busy"] = flat["machine_busy"]
        return self.percent


# -- containers --------------------------------------------------------------------------------


def docker_cli(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:2])} -> {result.returncode}: {result.stderr}")
    return result.stdout


class SystemdBox:
    """A container with systemd as PID 1 (tests/integration/test_inner_journal_follower.py's Box)."""

    def __init__(self, label: str) -> None:
        self.name = f"jb-bench-inner-{uuid.uuid4().hex[:8]}"
        self.id = docker_cli(
            "run", "-d", "--name", self.name, "--label", f"{LABEL}={label}",
            "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined", "--network", "none",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--cgroupns=host",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--stop-signal", "SIGRTMIN+3",  # systemd's "halt"; SIGTERM would make it re-execute
            SYSTEMD_IMAGE, "/lib/systemd/systemd",
        ).strip()  # fmt: skip
        deadline = time.monotonic() + 90
        while self.sh("systemctl is-system-running", check=False).strip() not in (
            "running",
            "degraded",
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("systemd did not boot in the container")
            time.sleep(0.25)

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> str:
        return docker_cli("exec", self.name, "sh", "-c", script, check=check, timeout=timeout)

    def count(self, tag: str) -> int:
        return int(self.sh(f"journalctl -q -t {tag} -o cat | wc -l"))

    def running(self) -> bool:
        state = docker_cli("inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return state.strip() == "true"

    def remove(self) -> None:
        docker_cli("rm", "-f", self.name, check=False)


def host_count(*matches: str) -> tuple[int, int]:
    """(entries, distinct messages) in the host journal matching all `matches` (FIELD=value)."""
    out = subprocess.run(
        ["journalctl", "-q", "-o", "cat", *matches], capture_output=True, timeout=300
    ).stdout.splitlines()
    return len(out), len(set(out))


# -- the bench ---------------------------------------------------------------------------------


class InnerBench:
    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.label = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix="jb-bench-inner-"))
        self.client = docker.from_env(version="1.41", timeout=300)
        self.bridge = BridgeProcess(self.workdir, self.label)
        self.boxes: list[SystemdBox] = []

    def disturbed(self, meter: TreeMeter, box: SystemdBox | None) -> str | None:
        """Why a run cannot finish or its figures mean nothing, if so."""
        assert self.bridge.process is not None
        if self.bridge.process.poll() is not None:
            return f"the bridge exited ({self.bridge.process.returncode})"
        if not Path(f"/proc/{meter.flat.pids.get('dockerd', 0)}/stat").exists():
            return "dockerd restarted (make test restarts a hung dockerd)"
        if box is not None and not box.running():
            return f"the systemd container stopped ({box.name})"
        return None

    def catch_up(self, sentinel: str, box: SystemdBox | None = None) -> dict[str, Any]:
        """Starts the stopped bridge; times it until `sentinel` is in the journal."""
        started = time.time()
        self.bridge.start()
        assert self.bridge.process is not None
        meter = TreeMeter(self.bridge.process.pid)
        meter.start()
        up = time.time()
        done = wait_watching([sentinel], 600, lambda: self.disturbed(meter, box))
        try:
            meter.stop()
        except FileNotFoundError as exc:
            raise Disturbed(f"a measured process exited (dockerd restarted?): {exc}") from exc
        self.bridge.stop()
        n = self.entries + 1
        seconds = done - started
        return {
            "seconds": round(seconds, 2),
            "entries_per_second": round(n / seconds),
            "seconds_after_engine_up": round(done - up, 2),
            "cpu_percent": meter.percent,
            "cpu_seconds": {k: round(v, 3) for k, v in meter.seconds.items()},
            "us_per_entry": {k: round(v / n * 1e6, 1) for k, v in meter.seconds.items()},
            "bridge_us_per_entry_since_launch": {
                k: round(v / n * 1e6, 1) for k, v in meter.since_launch.items()
            },
        }

    def inner_once(self) -> dict[str, Any]:
        tag = f"i{uuid.uuid4().hex[:6]}"
        self.bridge.start()
        box = SystemdBox(self.label)
        self.boxes.append(box)
        box.sh(f"logger -t {tag} ready-{tag}")
        wait_for_messages([f"ready-{tag}"], 120)  # the bridge follows the box's journal
        self.bridge.stop()
        box.sh(
            f'{{ seq -f "{tag} %08g {PAD}" {self.entries}; echo END-{tag}; }} '
            f"| systemd-cat -t {tag}"
        )
        deadline = time.monotonic() + 120
        while box.count(tag) < self.entries + 2:  # with the ready marker
            if time.monotonic() > deadline:
                raise TimeoutError(f"the box's journald has {box.count(tag)} of {tag}'s entries")
            time.sleep(0.5)
        run = self.catch_up(f"END-{tag}", box)
        count, distinct = host_count(
            f"CONTAINER_ID_FULL={box.id}", "CONTAINER_STREAM=journal", f"SYSLOG_IDENTIFIER={tag}"
        )
        box.remove()
        self.boxes.remove(box)
        # the ready marker and the sentinel besides the entries
        run["complete"] = count == distinct == self.entries + 2
        run["journal_count"] = count - 1
        return run

    def stdout_once(self) -> dict[str, Any]:
        tag = f"o{uuid.uuid4().hex[:6]}"
        script = (
            f"awk 'BEGIN{{for(i=1;i<={self.entries};i++) printf \"{tag} %08d {PAD}\\n\", i}}'; "
            f"echo END-{tag}"
        )
        container = self.client.containers.run(
            IMAGE,
            ["sh", "-c", script],
            detach=True,
            network_disabled=True,  # no libnetwork endpoint: see tests/integration/dockerd.py
            network_mode="none",
            labels={LABEL: self.label},
            log_config={"type": "json-file"},
        )
        try:
            container.wait(timeout=120)
            run = self.catch_up(f"END-{tag}")
            count, distinct = host_count(
                f"CONTAINER_ID_FULL={container.id}", "CONTAINER_STREAM=stdout"
            )
        finally:
            with contextlib.suppress(docker.errors.APIError, OSError):
                container.remove(force=True)  # else cleanup() does, once dockerd answers
        run["complete"] = count == distinct == self.entries + 1
        run["journal_count"] = count
        return run

    def retrying(self, path: str, once: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """`once()`, again (up to RETRIES times) when dockerd was restarted meanwhile."""
        for attempt in range(RETRIES + 1):
            dockerd = live_pid("dockerd")
            try:
                return once()
            except Exception as exc:
                if attempt == RETRIES or not (
                    isinstance(exc, Disturbed) or live_pid("dockerd") != dockerd
                ):
                    raise
                print(f"  inner {path}: run spoiled ({exc}); once more", flush=True)
                if self.bridge.process is not None:
                    self.bridge.stop()
                remove_labelled(self.label)  # also waits for dockerd to answer
                self.boxes.clear()
        raise AssertionError("unreachable")

    def cleanup(self) -> None:
        if self.bridge.process is not None:
            self.bridge.stop()
        remove_labelled(self.label)
        self.boxes.clear()
        self.client.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


class Disturbed(RuntimeError):
    """Something outside the bench (make test restarting dockerd, say) spoiled a run."""


def wait_watching(
    messages: list[str], timeout: float, disturbed: Callable[[], str | None]
) -> float:
    """wait_for_messages, checking every few seconds that the run can still finish."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return wait_for_messages(messages, max(0.1, min(5.0, deadline - time.monotonic())))
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise
            if (why := disturbed()) is not None:
                raise Disturbed(why) from None


def remove_labelled(label: str, timeout: float = 180) -> None:
    """Removes every container of this run, waiting for dockerd if it is being restarted."""
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={LABEL}={label}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if listed.returncode == 0 and not listed.stdout.split():
            return
        if listed.returncode == 0:
            subprocess.run(["docker", "rm", "-f", *listed.stdout.split()], capture_output=True)
        elif time.monotonic() > deadline:
            print(f"  could not remove the containers labelled {LABEL}={label}", flush=True)
            return
        else:
            time.sleep(2)


def measure(reps: int = 1, entries: int = ENTRIES) -> tuple[dict[str, Any], str]:
    """Alternates the inner and stdout catch-ups `reps` times; (figures, markdown snippet)."""
    bench = InnerBench(entries)
    runs: dict[str, list[dict[str, Any]]] = {"inner": [], "stdout": []}
    try:
        for rep in range(reps):
            for path, once in (("inner", bench.inner_once), ("stdout", bench.stdout_once)):
                run = bench.retrying(path, once)
                runs[path].append(run)
                print(
                    f"  inner rep {rep + 1} {path}: {run['entries_per_second']:,} entries/s in "
                    f"{run['seconds']} s; complete {run['complete']}; µs/entry {run['us_per_entry']}",
                    flush=True,
                )
    finally:
        bench.cleanup()
    med: dict[str, dict[str, Any]] = {}
    for path, path_runs in runs.items():
        med[path] = {
            "seconds": statistics.median(r["seconds"] for r in path_runs),
            "seconds_after_engine_up": statistics.median(
                r["seconds_after_engine_up"] for r in path_runs
            ),
            "entries_per_second": statistics.median(r["entries_per_second"] for r in path_runs),
            "us_per_entry": {
                k: statistics.median(r["us_per_entry"][k] for r in path_runs)
                for k in path_runs[0]["us_per_entry"]
            },
            "bridge_us_per_entry_since_launch": statistics.median(
                r["bridge_us_per_entry_since_launch"]["bridge_total"] for r in path_runs
            ),
        }
    i, o = med["inner"], med["stdout"]
    ratio = {
        "catch_up_seconds": round(i["seconds"] / o["seconds"], 2),
        "bridge_cpu_per_entry": round(
            i["us_per_entry"]["bridge_total"] / max(o["us_per_entry"]["bridge_total"], 1e-9), 2
        ),
        "journald_cpu_per_entry": round(
            i["us_per_entry"]["journald"] / max(o["us_per_entry"]["journald"], 1e-9), 2
        ),
    }
    complete = all(r["complete"] for path_runs in runs.values() for r in path_runs)
    figures: dict[str, Any] = {
        "entries": entries,
        "reps": reps,
        "complete": complete,
        "median": med,
        "ratio_inner_to_stdout": ratio,
        "runs": runs,
    }
    iu, ou = i["us_per_entry"], o["us_per_entry"]
    summary = (
        f"inner journal ({entries:,} entries written while the bridge was down): caught up in "
        f"{i['seconds']:.1f} s ({i['entries_per_second']:,.0f} entries/s) against {o['seconds']:.1f} s "
        f"({o['entries_per_second']:,.0f} lines/s) for {entries:,} stdout lines, "
        f"{ratio['catch_up_seconds']:.2f}x the time; bridge CPU per entry {iu['bridge_total']:.1f} µs "
        f"(main {iu['bridge']:.1f} + worker {iu['workers']:.1f}) against {ou['bridge_total']:.1f}, "
        f"{ratio['bridge_cpu_per_entry']:.2f}x; journald {iu['journald']:.1f} against "
        f"{ou['journald']:.1f} µs{'' if complete else '; ENTRIES MISSING'} (median of {reps})"
    )
    figures["summary"] = summary
    markdown = "\n".join(
        [
            "### A container's own journal: catch-up and CPU per entry (issue 16)",
            "",
            f"- {summary}",
            "",
            "| path | catch-up s (after engine up) | entries/s | bridge µs/entry (main + workers) "
            "| from launch | journald µs | dockerd µs |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *[
                f"| {path} | {m['seconds']:.1f} ({m['seconds_after_engine_up']:.1f}) | "
                f"{m['entries_per_second']:,.0f} | "
                f"{m['us_per_entry']['bridge_total']:.1f} ({m['us_per_entry']['bridge']:.1f} + "
                f"{m['us_per_entry']['workers']:.1f}) | {m['bridge_us_per_entry_since_launch']:.1f} | "
                f"{m['us_per_entry']['journald']:.1f} | {m['us_per_entry']['dockerd']:.1f} |"
                for path, m in med.items()
            ],
            f"| inner / stdout | {ratio['catch_up_seconds']:.2f} | | "
            f"{ratio['bridge_cpu_per_entry']:.2f} | | {ratio['journald_cpu_per_entry']:.2f} | |",
            "",
        ]
    )
    return figures, markdown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--entries", type=int, default=ENTRIES)
    parser.add_argument("--markdown", action="store_true", help="print the snippet as well")
    args = parser.parse_args()
    figures, markdown = measure(args.reps, args.entries)
    print(figures["summary"])
    if args.markdown:
        print(markdown)
    return 0 if figures["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
