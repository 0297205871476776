"""The burst scenarios of `make bench` (issue 14): many `--rm` containers started at once.

Each scenario runs once per source the bridge can read from (`docker.source` = "files", then
"api"), with a bridge process of that source alone: two bridges at once would both forward the
bench's containers.

- burst loss: 100 containers that print one stdout and one stderr line and exit at once; the
  lines lost and duplicated, counted in the journal per container and stream.
- burst latency: 30 containers that print one line, sleep (long enough for the API path, which
  opens a container's stream from its `start` event, to find it still there) and exit; the delay
  from each one's start to its line in the journal.

"At once": every container of a burst is created first, then all are started from as many
threads, released together by a barrier, so the starts reach dockerd together instead of being
spaced out by the creates.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import docker
from measure import (
    IMAGE,
    LABEL,
    BridgeProcess,
    percentiles,
    pid_of,
    received_ns,
    rfc3339_ns,
)
from systemd import journal

if TYPE_CHECKING:
    from run import Bench

SOURCES = ("files", "api")
LOSS_CONTAINERS = 100
LATENCY_CONTAINERS = 30
LATENCY_SLEEP = 5  # seconds each latency container lives after its line
LATENCY_TARGET_MS = 250.0  # issue 14: p99 from start to reading, burst of 30, Engine-API path
# A line still missing once the journal has had none of the burst's lines for this long, and the
# bridge holds no container and no line, is counted lost: its `--rm` container is gone, and with
# it the log the API source would read. Lines can reach the journal seconds after the engine
# stamped them while dockerd is busy starting a burst, but they arrive steadily meanwhile.
QUIET_SECONDS = 20.0


def start_burst(
    client: docker.DockerClient, label: str, scripts: list[str]
) -> tuple[list[str], float]:
    """Creates one `--rm` container per script, then starts them all at once.

    Returns the container ids and how long the starts took, from the barrier's release to the
    last one's return.
    """
    host_config = client.api.create_host_config(
        auto_remove=True,
        network_mode="none",  # no libnetwork endpoint: see tests/integration/dockerd.py
        log_config=docker.types.LogConfig(type="json-file"),
    )

    def create(script: str) -> str:
        created = client.api.create_container(
            IMAGE,
            ["sh", "-c", script],
            labels={LABEL: label},
            host_config=host_config,
            network_disabled=True,
        )
        return str(created["Id"])

    barrier = threading.Barrier(len(scripts), timeout=120)
    released = [0.0]

    def start(cid: str) -> None:
        if barrier.wait() == 0:
            released[0] = time.monotonic()
        client.api.start(cid)

    with ThreadPoolExecutor(len(scripts)) as pool:
        ids = list(pool.map(create, scripts))
        list(pool.map(start, ids))
    return ids, time.monotonic() - released[0]


class StartEvents:
    """The time (ns) of each `start` event of the bench's containers, from construction on.

    Taken from dockerd's events stream rather than by inspecting the containers, which would
    load dockerd during the burst with requests of the bench's own, and race with `--rm`.
    """

    def __init__(self, client: docker.DockerClient, label: str) -> None:
        self.times: dict[str, int] = {}
        # Subscribed once this returns: dockerd sends the response head as it registers us.
        self._stream = client.events(
            decode=True,
            filters={"type": "container", "event": "start", "label": f"{LABEL}={label}"},
        )
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        for event in self._stream:  # ends when close() closes the stream
            self.times[event["id"]] = int(event["timeNano"])

    def close(self, ids: list[str], timeout: float) -> dict[str, int]:
        """The times, once every one of `ids` has its event or `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while not set(ids) <= self.times.keys() and time.monotonic() < deadline:
            time.sleep(0.1)
        self._stream.close()
        self._thread.join(5)
        return dict(self.times)


def journal_entries(
    ids: list[str], lines_each: int, deadline: float, idle: Callable[[], bool]
) -> dict[str, list[Any]]:
    """Every entry in the journal of these containers, once each has `lines_each` of them.

    Gives up when `idle()` (the bridge has nothing left to forward) QUIET_SECONDS after the
    last new entry, or at `deadline` (monotonic); what is missing then is lost. Polls
    unhurried, as measure.wait_for_messages does and for the same reason; the delays come from
    the entries' own receive times, not from when they are seen.
    """
    reader = journal.Reader()
    for cid in ids:
        reader.add_match(CONTAINER_ID_FULL=cid)  # one field, many values: any of them
    reader.seek_head()
    found: dict[str, list[Any]] = {cid: [] for cid in ids}
    last_new = time.monotonic()
    try:
        while True:
            for entry in reader:
                found[entry["CONTAINER_ID_FULL"]].append(entry)
                last_new = time.monotonic()
            now = time.monotonic()
            if all(len(v) >= lines_each for v in found.values()):
                return found
            if (now - last_new > QUIET_SECONDS and idle()) or now > deadline:
                return found
            time.sleep(0.2)
            reader.wait(0)  # takes in what changed (new entries, rotated files) without waiting
    finally:
        reader.close()


def remove_burst(client: docker.DockerClient, label: str) -> None:
    """Waits for the `--rm` containers to remove themselves; removes any left after a minute."""
    deadline = time.monotonic() + 60
    while True:
        # The low-level listing: the high-level one inspects each container, which races
        # with their removal (404).
        left = client.api.containers(all=True, filters={"label": f"{LABEL}={label}"})
        if not left:
            return
        if time.monotonic() > deadline:
            for c in left:
                # NotFound or 409 "removal already in progress": it is removing itself.
                with contextlib.suppress(docker.errors.APIError):
                    client.api.remove_container(c["Id"], force=True)
            return
        time.sleep(0.5)


def bridge_idle(bridge: BridgeProcess) -> bool:
    """No container attached and no line read but not yet sent: nothing more is coming."""
    return (
        bridge.metric("journald_bridge_containers_attached") == 0
        and bridge.metric("journald_bridge_pending_bytes") == 0
    )


def bridge_counters(bridge: BridgeProcess) -> dict[str, float]:
    """The bridge's own account of a burst, to tell a container never attached from a read error."""
    return {
        "attached": bridge.metric("journald_bridge_container_attach_total"),
        "stream_errors": bridge.metric("journald_bridge_stream_errors_total"),
        "lines_forwarded": bridge.metric("journald_bridge_lines_forwarded_total"),
    }


# --- both scenarios --------------------------------------------------------------------------


def run_burst(
    bench: Bench, bridge: BridgeProcess, scripts: list[str], lines_each: int
) -> tuple[list[str], dict[str, list[Any]], dict[str, int], float]:
    """Starts a burst; its container ids, their entries, `start` event times and start time."""
    events = StartEvents(bench.client, bench.label)
    ids: list[str] = []
    try:
        ids, start_seconds = start_burst(bench.client, bench.label, scripts)
        found = journal_entries(
            ids, lines_each, time.monotonic() + 180, lambda: bridge_idle(bridge)
        )
    finally:
        start_events = events.close(ids, 10)
    remove_burst(bench.client, bench.label)
    return ids, found, start_events, start_seconds


def start_delays(entries: list[Any], start_events: dict[str, int]) -> dict[str, Any]:
    """How long after its container's start each entry reached the journal.

    Per entry, delay = journald's receive time (__REALTIME_TIMESTAMP) minus the container's
    start, where the start is the earlier of its `start` event (the event's timeNano, from
    dockerd's events stream) and the line's engine timestamp (SYSLOG_TIMESTAMP, which the
    bridge forwards); all are this host's wall clock. dockerd records a start (State.StartedAt,
    then the event) only once containerd reports the process running, so under a burst a line
    printed at once can be stamped well before the event; taking the earlier of the two never
    counts that part as free. The bridge reads a line before journald receives it, so this is
    an upper bound of start -> reading (it includes the bridge's queue, its send and journald's
    receive). Also given: the delay from the `start` event alone, the start the API source
    reacts to, and how long before the event the line was stamped (< 0: after it).
    """
    to_journal, from_event, line_before_event = [], [], []
    for entry in entries:
        received = received_ns(entry)
        stamped = rfc3339_ns(entry["SYSLOG_TIMESTAMP"])
        event = start_events.get(entry["CONTAINER_ID_FULL"], stamped)  # no event: the line's time
        to_journal.append((received - min(event, stamped)) / 1e6)
        from_event.append((received - event) / 1e6)
        line_before_event.append((event - stamped) / 1e6)
    return {
        "start_to_journal_ms": percentiles(to_journal),
        "start_event_to_journal_ms": percentiles(from_event),
        "line_before_start_event_ms": percentiles(line_before_event),
    }


def per_source(
    bench: Bench, name: str, once: Callable[[Bench, BridgeProcess], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Runs a scenario once per rep and source, with a bridge of that source alone."""
    runs: dict[str, list[dict[str, Any]]] = {source: [] for source in SOURCES}
    for rep in range(bench.reps):
        for source in SOURCES:
            workdir = bench.workdir / f"{name.replace(' ', '-')}-{source}"
            workdir.mkdir(exist_ok=True)
            bridge = BridgeProcess(workdir, bench.label, source)
            bridge.start(ready=True)  # a burst, not a start-up listing racing with one
            dockerd = pid_of("dockerd")
            try:
                run = once(bench, bridge)
            finally:
                bridge.stop()
            # A dockerd restarted meanwhile (by hand, or a test's hang recovery on a shared
            # host) kills the burst's containers and the bridge's streams: not a figure of
            # the bridge's.
            run["dockerd_restarted"] = pid_of("dockerd") != dockerd
            runs[source].append(run)
            print(f"  {name} rep {rep + 1} {source}: {run}", flush=True)
    return runs


def median_of(runs: list[dict[str, Any]], figure: str, key: str) -> float:
    return float(statistics.median(r[figure][key] for r in runs))


def counted(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The runs the summary counts: those without a dockerd restart (all, if none is)."""
    return {
        source: [r for r in rs if not r["dockerd_restarted"]] or rs for source, rs in runs.items()
    }


def restart_note(runs: dict[str, list[dict[str, Any]]]) -> str:
    restarted = sum(r["dockerd_restarted"] for rs in runs.values() for r in rs)
    return f" [{restarted} run(s) left out: dockerd restarted during them]" if restarted else ""


# --- burst loss ------------------------------------------------------------------------------


def loss_once(bench: Bench, bridge: BridgeProcess) -> dict[str, Any]:
    tag = f"b{uuid.uuid4().hex[:6]}"
    want = {
        n: {("stdout", f"{tag}-{n} out"), ("stderr", f"{tag}-{n} err")}
        for n in range(LOSS_CONTAINERS)
    }
    scripts = [f"echo {tag}-{n} out; echo {tag}-{n} err >&2" for n in range(LOSS_CONTAINERS)]
    before = bridge_counters(bridge)
    ids, found, start_events, start_seconds = run_burst(bench, bridge, scripts, 2)
    after = bridge_counters(bridge)
    lost = duplicated = unexpected = silent = 0
    for n, cid in enumerate(ids):
        seen = Counter((e.get("CONTAINER_STREAM"), e.get("MESSAGE")) for e in found[cid])
        lost += sum(1 for key in want[n] if not seen[key])
        duplicated += sum(count - 1 for key, count in seen.items() if key in want[n])
        unexpected += sum(count for key, count in seen.items() if key not in want[n])
        silent += not found[cid]
    return {
        "lines": 2 * LOSS_CONTAINERS,
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "containers_with_no_line": silent,
        "no_start_event": len(set(ids) - start_events.keys()),
        "start_seconds": round(start_seconds, 2),
        **start_delays([e for cid in ids for e in found[cid]], start_events),
        "bridge": {key: after[key] - before[key] for key in after},
    }


def burst_loss(bench: Bench) -> None:
    """100 `--rm` containers at once, one stdout and one stderr line each: lines lost per source.

    A line is lost when no entry of its container, stream and text is in the journal once the
    bridge has gone quiet (see QUIET_SECONDS); more than one such entry is a duplicate. Also
    given, for the lines that arrived: the delay from start to the journal (see start_delays).
    """
    runs = per_source(bench, "burst loss", loss_once)
    summary = {
        source: {
            "lines": sum(r["lines"] for r in rs),
            "lost": sum(r["lost"] for r in rs),
            "duplicated": sum(r["duplicated"] for r in rs),
            "unexpected": sum(r["unexpected"] for r in rs),
            "lost_per_rep": [r["lost"] for r in rs],
            "containers_with_no_line_per_rep": [r["containers_with_no_line"] for r in rs],
            "start_to_journal_p99_ms": median_of(rs, "start_to_journal_ms", "p99"),
        }
        for source, rs in counted(runs).items()
    }
    bench.results["burst_loss"] = {"runs": runs, "summary": summary}
    bench.say(
        f"burst loss ({LOSS_CONTAINERS} `--rm` containers started at once, 1 stdout + 1 stderr "
        f"line each, {bench.reps} rep(s); target 0 lost): "
        + "; ".join(
            f"{source} {s['lost']} of {s['lines']} lines lost (per rep {s['lost_per_rep']}; "
            f"containers with no line {s['containers_with_no_line_per_rep']}), "
            f"{s['duplicated']} duplicated, {s['unexpected']} unexpected, "
            f"start->journal p99 {s['start_to_journal_p99_ms']:.1f} ms (median of reps)"
            for source, s in summary.items()
        )
        + restart_note(runs)
    )


# --- burst latency ---------------------------------------------------------------------------


def latency_once(bench: Bench, bridge: BridgeProcess) -> dict[str, Any]:
    tag = f"d{uuid.uuid4().hex[:6]}"
    scripts = [f"echo {tag}-{n}; sleep {LATENCY_SLEEP}" for n in range(LATENCY_CONTAINERS)]
    ids, found, start_events, start_seconds = run_burst(bench, bridge, scripts, 1)
    return {
        "containers": LATENCY_CONTAINERS,
        "missing": sum(1 for cid in ids if not found[cid]),
        "no_start_event": len(set(ids) - start_events.keys()),
        "start_seconds": round(start_seconds, 2),
        **start_delays([e for cid in ids for e in found[cid][:1]], start_events),
    }


def burst_latency(bench: Bench) -> None:
    """30 containers at once, each printing one line at its start: start -> journal per source.

    The delay of each container's line as start_delays defines it, an upper bound of start ->
    reading. p50/p99/max are over the burst's containers (with 30, p99 is the maximum); per
    source, the median over reps.
    """
    runs = per_source(bench, "burst latency", latency_once)
    median = {
        source: {key: median_of(rs, "start_to_journal_ms", key) for key in ("p50", "p99", "max")}
        | {
            "p99_from_start_event": median_of(rs, "start_event_to_journal_ms", "p99"),
            "missing": sum(r["missing"] for r in rs),
        }
        for source, rs in counted(runs).items()
    }
    bench.results["burst_latency"] = {"runs": runs, "median": median}
    bench.say(
        f"burst latency ({LATENCY_CONTAINERS} `--rm` containers started at once, start -> in the "
        f"journal, an upper bound of start -> reading, median of {bench.reps}; "
        f"target api p99 <= {LATENCY_TARGET_MS:.0f} ms): "
        + "; ".join(
            f"{source} p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms, max {m['max']:.1f} ms"
            f" (from the `start` event alone: p99 {m['p99_from_start_event']:.1f} ms;"
            f" {m['missing']} containers' line missing)"
            for source, m in median.items()
        )
        + restart_note(runs)
    )
