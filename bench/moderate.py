"""The moderate-rate scenario of `make bench`: many containers, each writing a line now and then.

A real host spends most of its time here, between idle and saturation: a web server logs a line
per request. Each case runs the same paced busybox loop (`echo`, then `usleep`) in N containers
for a fixed time, and measures, over the time the lines flow:

- CPU per line of the bridge and of dockerd, from /proc (all threads), per source of the
  bridge (`files`, `api`), with a bridge process of that source alone;
- the same lines through Docker's own journald driver, with no bridge: dockerd's CPU per line
  there is what the driver costs, the figure to hold the bridge's against;
- end-to-end latency p50/p99: journald's receive time (`__REALTIME_TIMESTAMP`) minus the
  engine's stamp of the line (`SYSLOG_TIMESTAMP`; the driver's send time for the driver).

Runnable alone: `.venv/bin/python bench/run.py --reps 1 --only moderate`.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import TYPE_CHECKING, Any

from measure import IMAGE, LABEL, BridgeProcess, CpuMeter, percentiles, pid_of, rfc3339_ns
from systemd import journal

if TYPE_CHECKING:
    from run import Bench

CASES = ((100, 10), (20, 50))  # (containers, lines per second each)
SECONDS = 30
MODES = ("files", "api", "driver")
TARGET_US_PER_LINE = 40.0  # issue 23: bridge CPU per line at 100 x 10 lines/s, files source
TARGET_P99_MS = 50.0


def paced_script(tag: str, rate: int, seconds: int) -> str:
    count = rate * seconds
    pause = 1_000_000 // rate
    return (
        f"i=1; while [ $i -le {count} ]; do echo {tag} $i; usleep {pause}; i=$((i+1)); done; "
        f"echo END-{tag}"
    )


def run_case(bench: Bench, mode: str, containers: int, rate: int) -> dict[str, float]:
    """One case in one mode: CPU per line and latency over the lines written."""
    tag = f"m{uuid.uuid4().hex[:6]}"
    tags = [f"{tag}-{n}" for n in range(containers)]
    driver = "journald" if mode == "driver" else "json-file"
    bridge: BridgeProcess | None = None
    if mode != "driver":
        workdir = bench.workdir / f"moderate-{tag}"
        workdir.mkdir()
        bridge = BridgeProcess(workdir, bench.label, source=mode)
        bridge.start(ready=True)
    pids = {"dockerd": pid_of("dockerd")}
    if bridge is not None and bridge.process is not None:
        pids["bridge"] = bridge.process.pid
    meter = CpuMeter(pids)
    try:
        started = [
            bench.client.containers.run(
                IMAGE,
                ["sh", "-c", paced_script(t, rate, SECONDS)],
                detach=True,
                network_disabled=True,
                network_mode="none",
                labels={LABEL: bench.label},
                log_config={"type": driver},
            )
            for t in tags
        ]
        meter.start()  # once all run: their start-up is not the cost of a line
        deadline = time.monotonic() + SECONDS * 4 + 60
        ends = {f"END-{t}" for t in tags}
        while ends and time.monotonic() < deadline:
            time.sleep(1)
            ends = {m for m in ends if not _in_journal(m)}
        meter.stop()
        lags, lines = _lags(started, mode)
    finally:
        if bridge is not None:
            bridge.stop()
        bench.cleanup_containers()
    per_line = meter.per_line(max(lines, 1))
    result = {f"{name}_us": us for name, us in per_line.items()}
    result.update({f"{k}_ms": v for k, v in percentiles(lags).items() if k in ("p50", "p99")})
    result["lines"] = lines
    result["missing_ends"] = len(ends)
    return result


def _in_journal(message: str) -> bool:
    reader = journal.Reader()
    try:
        reader.add_match(MESSAGE=message)
        return reader.get_next() != {}
    finally:
        reader.close()


def _lags(containers: list[Any], mode: str) -> tuple[list[float], int]:
    lags: list[float] = []
    for c in containers:
        reader = journal.Reader()
        reader.add_match(CONTAINER_ID_FULL=c.id)
        for entry in reader:
            received_us = entry["__REALTIME_TIMESTAMP"].timestamp() * 1e6
            if mode == "driver":
                stamped_us = entry["_SOURCE_REALTIME_TIMESTAMP"].timestamp() * 1e6
            else:
                stamped_us = rfc3339_ns(entry["SYSLOG_TIMESTAMP"]) / 1000
            lags.append((received_us - stamped_us) / 1000)
        reader.close()
    return lags, len(lags)


def measure(bench: Bench) -> None:
    figures: dict[str, Any] = {}
    for containers, rate in CASES:
        case = f"{containers}x{rate}"
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for rep in range(bench.reps):
            for mode in MODES:
                result = run_case(bench, mode, containers, rate)
                runs[mode].append(result)
                print(f"  moderate {case} rep {rep + 1} {mode}: {result}", flush=True)
        medians = {
            mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for mode, rs in runs.items()
        }
        figures[case] = {"runs": runs, "median": medians}
        parts = []
        for mode in ("files", "api"):
            m = medians[mode]
            parts.append(
                f"{mode}: bridge {m.get('bridge_us', 0):.1f} µs/line, dockerd "
                f"{m.get('dockerd_us', 0):.1f}, p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms"
            )
        d = medians["driver"]
        parts.append(f"driver: dockerd {d.get('dockerd_us', 0):.1f} µs/line, p99 {d['p99_ms']:.1f} ms")
        bench.say(f"moderate {containers} x {rate} lines/s x {SECONDS} s: " + "; ".join(parts))
    bench.results["moderate"] = figures
