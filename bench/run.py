"""`make bench`: the bridge against Docker's journald driver and journald's own ceiling.

Real dockerd, real journald (the host's main journal), the bridge as a real process. Prints one
summary line per scenario and writes bench/results.md. Comparisons alternate within one run and
report the median of the repetitions. Timing is wall clock from container start until the last
line is in the journal (a per-container sentinel line, found through the journal's index).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import burst
import docker
import engines
import inner
import moderate
from measure import (
    IMAGE,
    LABEL,
    BridgeProcess,
    CpuMeter,
    cpu_text,
    median_each,
    per_line_text,
    pid_of,
    wait_for_messages,
)
from systemd import journal

ROOT = Path(__file__).parents[1]
SCENARIOS = [
    "throughput",
    "latency",
    "scale",
    "catch_up",
    "burst_loss",
    "burst_latency",
    "two_engines",
    "inner_journal",
    "moderate",
]
PAD = "x" * 80  # ~100-byte lines with the sequence number and tag
THROUGHPUT_CONTAINERS, THROUGHPUT_LINES = 4, 50000
THROUGHPUT_TOTAL = THROUGHPUT_CONTAINERS * (THROUGHPUT_LINES + 1)  # with each one's sentinel


def line_script(tag: str, count: int, *, pace: str | None = None) -> str:
    if pace is None:
        body = f"awk 'BEGIN{{for(i=1;i<={count};i++) printf \"{tag} %08d {PAD}\\n\", i}}'"
    else:
        body = (
            f"i=1; while [ $i -le {count} ]; do echo {tag} $i {PAD}; i=$((i+1)); sleep {pace}; done"
        )
    return f"{body}; echo END-{tag}"


class Bench:
    def __init__(self, reps: int) -> None:
        self.client = docker.from_env(version="1.41", timeout=300, max_pool_size=64)
        self.reps = reps
        self.label = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix="jb-bench-"))
        self.results: dict[str, Any] = {}
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def run_containers(self, scripts: list[str], driver: str = "json-file") -> list[Any]:
        return [
            self.client.containers.run(
                IMAGE,
                ["sh", "-c", s],
                detach=True,
                network_disabled=True,  # no libnetwork endpoint: see tests/integration/dockerd.py
                network_mode="none",
                labels={LABEL: self.label},
                log_config={"type": driver},
            )
            for s in scripts
        ]

    def cleanup_containers(self) -> None:
        for c in self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.label}"}):
            c.remove(force=True)

    # --- 1. throughput ---------------------------------------------------------------------

    def throughput_once(
        self,
        mode: str,
        meter: CpuMeter | None = None,
        containers: int = THROUGHPUT_CONTAINERS,
        lines: int = THROUGHPUT_LINES,
    ) -> float:
        tag = f"t{uuid.uuid4().hex[:6]}"
        tags = [f"{tag}-{n}" for n in range(containers)]
        if mode == "ceiling":
            return self.ceiling_once(tags, lines, meter)
        if meter is not None:
            meter.start()
        started = time.time()
        self.run_containers(
            [line_script(t, lines) for t in tags], "journald" if mode == "driver" else "json-file"
        )
        done = wait_for_messages([f"END-{t}" for t in tags], 600)
        if meter is not None:
            meter.stop()  # before removing the containers, which is dockerd's work too
        self.cleanup_containers()
        return containers * (lines + 1) / (done - started)

    def ceiling_once(self, tags: list[str], lines: int, meter: CpuMeter | None = None) -> float:
        """Pre-encoded datagrams with the bridge's field set, from one process, as fast as possible."""
        datagrams = []
        for n, tag in enumerate(tags):
            cid = uuid.uuid4().hex * 2
            fixed = (
                f"CONTAINER_STREAM=stdout\nCONTAINER_ID={cid[:12]}\nCONTAINER_ID_FULL={cid}\n"
                f"CONTAINER_NAME=bench-{n}\nCONTAINER_TAG=bench-{n}\nSYSLOG_IDENTIFIER=bench-{n}\n"
                f"IMAGE_NAME={IMAGE}\n"
            ).encode()
            for i in range(1, lines + 2):
                message = f"{tag} {i:08d} {PAD}" if i <= lines else f"END-{tag}"
                ts = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
                datagrams.append(
                    b"MESSAGE="
                    + message.encode()
                    + b"\nPRIORITY=6\nSYSLOG_TIMESTAMP="
                    + ts.encode()
                    + b"\n"
                    + fixed
                )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect("/run/systemd/journal/socket")
        if meter is not None:
            meter.start()
        started = time.time()
        for datagram in datagrams:
            sock.send(datagram)  # blocking: journald's pace
        sock.close()
        done = wait_for_messages([f"END-{t}" for t in tags], 600)
        if meter is not None:
            meter.stop()
        return len(datagrams) / (done - started)

    def meter(self, mode: str, bridge: BridgeProcess | None = None) -> CpuMeter:
        """A CPU meter on the processes that do a mode's work."""
        journald = pid_of("systemd-journal")
        if mode == "ceiling":
            return CpuMeter({"sender": os.getpid(), "journald": journald})
        pids = {"dockerd": pid_of("dockerd"), "journald": journald}
        if bridge is not None and bridge.process is not None:
            pids = {"bridge": bridge.process.pid, **pids}
        return CpuMeter(pids)

    def throughput(self, bridge: BridgeProcess) -> None:
        runs: dict[str, list[float]] = {"bridge": [], "driver": [], "ceiling": []}
        cpu: dict[str, list[dict[str, float]]] = {"bridge": [], "driver": [], "ceiling": []}
        per_line: dict[str, list[dict[str, float]]] = {"bridge": [], "driver": [], "ceiling": []}
        for rep in range(self.reps):
            for mode in ("bridge", "driver", "ceiling"):
                meter = self.meter(mode, bridge)
                rate = self.throughput_once(mode, meter)
                used = meter.stop()
                runs[mode].append(rate)
                cpu[mode].append(used)
                per_line[mode].append(meter.per_line(THROUGHPUT_TOTAL))
                print(
                    f"  throughput rep {rep + 1} {mode}: {rate:,.0f} lines/s; cpu {cpu_text(used)}; "
                    f"us/line {per_line_text(per_line[mode][-1])}",
                    flush=True,
                )
        med = {m: statistics.median(v) for m, v in runs.items()}
        cpu_med = {m: median_each(uses) for m, uses in cpu.items()}
        per_line_med = {m: median_each(uses) for m, uses in per_line.items()}
        self.results["throughput"] = {
            "runs": runs,
            "median": med,
            "cpu": cpu,
            "cpu_median": cpu_med,
            "cpu_us_per_line": per_line,
            "cpu_us_per_line_median": per_line_med,
        }
        self.say(
            f"throughput: bridge {med['bridge']:,.0f} lines/s, driver {med['driver']:,.0f}, ceiling {med['ceiling']:,.0f}; "
            f"a/b = {med['bridge'] / med['driver']:.2f}, a/c = {med['bridge'] / med['ceiling']:.2f} (median of {self.reps})"
        )
        self.say(
            "throughput CPU, % of one core (median): "
            + "; ".join(f"{mode}: {cpu_text(cpu_med[mode])}" for mode in cpu_med)
        )
        self.say(
            "throughput CPU per line, µs (median): "
            + "; ".join(
                f"{mode}: {per_line_text(v)} (sum {sum(v.values()):.1f})"
                for mode, v in per_line_med.items()
            )
        )

    # --- 2. latency ----------------------------------------------------------------------------

    def latency_once(self, mode: str, seconds: int = 30) -> list[float]:
        tag = f"l{uuid.uuid4().hex[:6]}"
        tags = [f"{tag}-{n}" for n in range(20)]
        per = 50 * seconds
        self.run_containers(
            [line_script(t, per, pace="0.02") for t in tags],
            "journald" if mode == "driver" else "json-file",
        )
        wait_for_messages([f"END-{t}" for t in tags], 300)
        lags = []
        for c in self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.label}"}):
            reader = journal.Reader()
            reader.add_match(CONTAINER_ID_FULL=c.id)
            for entry in reader:
                received = entry["__REALTIME_TIMESTAMP"].timestamp()
                if mode == "bridge":
                    stamped = datetime.datetime.fromisoformat(
                        entry["SYSLOG_TIMESTAMP"][:26] + "+00:00"
                    ).timestamp()
                else:  # the driver sends as it stamps: its send time is Docker's timestamp
                    stamped = entry["_SOURCE_REALTIME_TIMESTAMP"].timestamp()
                lags.append(received - stamped)
            reader.close()
        self.cleanup_containers()
        return lags

    def latency(self, bridge: BridgeProcess) -> None:
        out: dict[str, dict[str, float]] = {}
        runs: dict[str, list[dict[str, float]]] = {"bridge": [], "driver": []}
        for rep in range(self.reps):
            for mode in ("bridge", "driver"):
                lags = sorted(self.latency_once(mode))
                stats = {
                    "p50": lags[len(lags) // 2] * 1000,
                    "p99": lags[int(len(lags) * 0.99)] * 1000,
                    "max": lags[-1] * 1000,
                    "n": len(lags),
                }
                runs[mode].append(stats)
                print(f"  latency rep {rep + 1} {mode}: {stats}", flush=True)
        for mode, stats_list in runs.items():
            out[mode] = {
                k: statistics.median(s[k] for s in stats_list) for k in ("p50", "p99", "max")
            }
        self.results["latency"] = {"runs": runs, "median": out}
        b, d = out["bridge"], out["driver"]
        self.say(
            f"latency (20 containers x 50 lines/s x 30 s): bridge p50 {b['p50']:.1f} ms, p99 {b['p99']:.1f} ms, "
            f"max {b['max']:.1f} ms; driver p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, max {d['max']:.1f} ms"
        )

    # --- 3. scale --------------------------------------------------------------------------------

    def scale(self) -> None:
        idle = 500
        self.say_progress(f"starting {idle} idle containers")
        for _ in range(idle):
            self.run_containers(["sleep 3600"])
        workdir = self.workdir / "scale"
        workdir.mkdir()
        bridge = BridgeProcess(workdir, self.label)
        started = time.monotonic()
        bridge.start()
        while bridge.metric("journald_bridge_containers_attached") < idle:
            time.sleep(0.05)
        attach = time.monotonic() - started
        time.sleep(5)
        cpu0, t0 = bridge.cpu_seconds(), time.monotonic()
        time.sleep(30)
        idle_cpu = (bridge.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        idle_rss = bridge.rss_mb()
        tag = f"s{uuid.uuid4().hex[:6]}"
        self.run_containers([line_script(f"{tag}-{n}", 6000, pace="0.01") for n in range(5)])
        cpu0, t0 = bridge.cpu_seconds(), time.monotonic()
        time.sleep(60)
        busy_cpu = (bridge.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        rss = max(idle_rss, bridge.rss_mb())
        bridge.stop()
        self.cleanup_containers()
        self.results["scale"] = {
            "attach_seconds": attach,
            "rss_mb": rss,
            "idle_cpu_percent": idle_cpu,
            "busy_cpu_percent": busy_cpu,
        }
        self.say(
            f"scale ({idle} idle + 5 at 100 lines/s): attached all in {attach:.1f} s, RSS {rss:.0f} MB, "
            f"CPU {idle_cpu:.1f}% of a core idle, {busy_cpu:.1f}% with the 5 writers (60 s)"
        )

    def say_progress(self, text: str) -> None:
        print(f"  {text}", flush=True)

    # --- 4. catch-up -----------------------------------------------------------------------------

    def catch_up(self) -> None:
        """1,000,000 lines written while the bridge is down, each run next to a ceiling run."""
        workdir = self.workdir / "catchup"
        workdir.mkdir()
        bridge = BridgeProcess(workdir, self.label)
        bridge.start()  # first run: later containers are forwarded from their first line
        bridge.stop()
        containers, lines = 4, 250000
        total = containers * (lines + 1)
        runs: list[dict[str, Any]] = []
        for rep in range(self.reps):
            tag = f"c{uuid.uuid4().hex[:6]}"
            tags = [f"{tag}-{n}" for n in range(containers)]
            for c in self.run_containers([line_script(t, lines) for t in tags]):
                c.wait(timeout=600)
            started = time.time()
            bridge.start()
            meter = self.meter("bridge", bridge)
            meter.start()
            done = wait_for_messages([f"END-{t}" for t in tags], 900)
            used = meter.stop()
            bridge.stop()
            self.cleanup_containers()
            ceiling_meter = self.meter("ceiling")
            ceiling = self.throughput_once("ceiling", ceiling_meter)
            run: dict[str, Any] = {
                "seconds": done - started,
                "lines_per_second": total / (done - started),
                "ceiling": ceiling,
                "ratio_to_ceiling": total / (done - started) / ceiling,
                "cpu": used,
                "cpu_us_per_line": meter.per_line(total),
                "ceiling_cpu_us_per_line": ceiling_meter.per_line(THROUGHPUT_TOTAL),
            }
            runs.append(run)
            self.say_progress(
                f"catch-up rep {rep + 1}: {run['lines_per_second']:,.0f} lines/s in {run['seconds']:.1f} s, "
                f"ceiling {ceiling:,.0f}: {run['ratio_to_ceiling']:.2f}; cpu {cpu_text(used)}; "
                f"us/line {per_line_text(run['cpu_us_per_line'])}"
            )
        median = {
            key: statistics.median(r[key] for r in runs)
            for key in ("seconds", "lines_per_second", "ceiling", "ratio_to_ceiling")
        }
        cpu = median_each([r["cpu"] for r in runs])
        per_line = median_each([r["cpu_us_per_line"] for r in runs])
        self.results["catch_up"] = {**median, "cpu": cpu, "cpu_us_per_line": per_line, "runs": runs}
        self.say(
            f"catch-up: 1,000,000 lines written while the bridge was down, in the journal "
            f"{median['seconds']:.1f} s after it started ({median['lines_per_second']:,.0f} lines/s); "
            f"{median['ratio_to_ceiling']:.2f} of the ceiling measured next to each run "
            f"({median['ceiling']:,.0f}; median of {self.reps}); cpu {cpu_text(cpu)}; "
            f"CPU per line, µs: {per_line_text(per_line)}"
        )

    def write_results(self, started: float, path: Path, only: list[str]) -> None:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        command = f"python bench/run.py --reps {self.reps}"
        if only != SCENARIOS:
            command += " --only " + " ".join(only)
        text = [
            "# journald-bridge benchmark results",
            "",
            f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            f"- machine: {os.cpu_count()} cores ({cpu}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
            f"{platform.platform()}",
            f"- docker: {self.client.version()['Version']}; journald: systemd {subprocess.run(['journalctl', '--version'], capture_output=True, text=True).stdout.split()[1]}",
            f"- command: `{command}`; {time.monotonic() - started:.0f} s",
            "",
            "## Summary",
            "",
            *[f"- {line}" for line in self.lines],
            "",
            "## Raw figures",
            "",
            "```json",
            json.dumps(self.results, indent=2),
            "```",
            "",
        ]
        path.write_text("\n".join(text))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=SCENARIOS)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results.md")
    args = parser.parse_args()
    bench = Bench(args.reps)
    started = time.monotonic()
    try:
        bridge = None
        if {"throughput", "latency"} & set(args.only):
            (bench.workdir / "main").mkdir()
            bridge = BridgeProcess(bench.workdir / "main", bench.label)
            bridge.start()
        try:
            if "throughput" in args.only:
                assert bridge is not None
                bench.throughput(bridge)
            if "latency" in args.only:
                assert bridge is not None
                bench.latency(bridge)
        finally:
            if bridge is not None:
                bridge.stop()
        if "scale" in args.only:
            bench.scale()
        if "catch_up" in args.only:
            bench.catch_up()
        if "burst_loss" in args.only:
            burst.burst_loss(bench)
        if "burst_latency" in args.only:
            burst.burst_latency(bench)
        if "moderate" in args.only:
            moderate.measure(bench)
        # These two start bridges of their own (bench/engines.py, bench/inner.py).
        for name, scenario in (("two_engines", engines.measure), ("inner_journal", inner.measure)):
            if name in args.only:
                figures, _ = scenario(args.reps)
                bench.results[name] = figures
                bench.say(str(figures["summary"]))
    finally:
        bench.cleanup_containers()
        shutil.rmtree(bench.workdir, ignore_errors=True)
    bench.write_results(started, args.results, args.only)
    print(f"wrote {args.results} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
