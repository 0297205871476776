"""The moderate rate on inner journals: containers with systemd as PID 1, each logging a few
entries a second into its own journal while the bridge follows them (bench/moderate.py's case
for the inner-journal path).

Each box runs `systemd-cat` fed by a paced loop (one entry, then `sleep`), so its journald
stores the entries one at a time, as a service that logs now and then does. Measured over the
span the entries flow:

- CPU per entry of the bridge's process tree (its own time and its inner-journal workers'),
  and journald's and dockerd's over the same span (inner.py's TreeMeter);
- latency p50/p99: the host journal's receive time minus the inner journal's own receive time
  (`t=` of the inner cursor the bridge writes with each entry).

    .venv/bin/python bench/inner_moderate.py [--boxes 10] [--rate 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from inner import PAD, SystemdBox, TreeMeter, docker_cli, remove_labelled
from measure import BridgeProcess, percentiles, wait_for_messages
from systemd import journal

CURSOR_FIELD = "JOURNALD_BRIDGE_INNER_CURSOR"


def paced(tag: str, rate: int, seconds: int) -> str:
    count = rate * seconds
    return (
        f'i=1; while [ $i -le {count} ]; do echo "{tag} $i {PAD}"; sleep {1 / rate:.3f}; '
        f"i=$((i+1)); done; echo END-{tag}"
    )


def lags_ms(box: SystemdBox, tag: str) -> list[float]:
    """Host receive time minus the inner journal's, per entry of `tag` from `box`."""
    reader = journal.Reader()
    lags: list[float] = []
    try:
        reader.add_match(CONTAINER_ID_FULL=box.id)
        reader.add_match(SYSLOG_IDENTIFIER=tag)
        for entry in reader:
            cursor = str(entry.get(CURSOR_FIELD, ""))
            inner_us = next((int(p[2:], 16) for p in cursor.split(";") if p.startswith("t=")), None)
            if inner_us is None or not str(entry["MESSAGE"]).startswith(tag):
                continue
            lags.append(entry["__REALTIME_TIMESTAMP"].timestamp() * 1000 - inner_us / 1000)
    finally:
        reader.close()
    return lags


def run(boxes: int, rate: int, seconds: int) -> dict[str, Any]:
    label = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="jb-bench-inner-moderate-"))
    bridge = BridgeProcess(workdir, label)
    bridge.start()
    started: list[SystemdBox] = []
    try:
        with ThreadPoolExecutor(boxes) as pool:
            started = list(pool.map(lambda _: SystemdBox(label), range(boxes)))
        tags = [f"im{uuid.uuid4().hex[:6]}" for _ in started]
        for box, tag in zip(started, tags, strict=True):
            box.sh(f"logger -t {tag} ready-{tag}")
        wait_for_messages([f"ready-{t}" for t in tags], 180)  # every box's journal followed
        assert bridge.process is not None
        meter = TreeMeter(bridge.process.pid)
        meter.start()
        for box, tag in zip(started, tags, strict=True):
            docker_cli("exec", "-d", box.name, "sh", "-c", f"{{ {paced(tag, rate, seconds)}; }} "
                       f"| systemd-cat -t {tag}")  # fmt: skip
        wait_for_messages([f"END-{t}" for t in tags], seconds * 4 + 60)
        percent = meter.stop()
        lags = [lag for box, tag in zip(started, tags, strict=True) for lag in lags_ms(box, tag)]
    finally:
        bridge.stop()
        for box in started:
            box.remove()
        remove_labelled(label)
    entries = max(len(lags), 1)
    us = {k: round(v / entries * 1e6, 1) for k, v in meter.seconds.items() if k != "machine_busy"}
    return {
        "boxes": boxes,
        "rate": rate,
        "entries": len(lags),
        "expected": boxes * rate * seconds,
        "us_per_entry": us,
        "percent_of_a_core": percent,
        "latency_ms": percentiles(lags),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--rate", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(run(args.boxes, args.rate, args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
