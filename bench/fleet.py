"""Capacity of one systemd-journal-remote collector, on loopback: `.venv/bin/python bench/fleet.py`.

1. Fill. The bridge (a real process) forwards the lines of 4 containers (compose-labelled, ~100-byte
   lines like `make bench`'s) into a journald namespace of its own: the entries a host's journal
   really holds, with every field the bridge writes and the trusted fields journald adds.
2. Catch-up. systemd-journal-upload --directory=<that namespace> --follow=no sends all of it to a
   fresh systemd-journal-remote (--split-mode=host), over HTTP and over HTTPS (certificates from
   deploy/fleet/fleet-ca.sh); --reps times each, alternating.
3. Live. Another fill, while an uploader follows the namespace (many small POSTs, as in steady
   state) into a fresh collector over HTTPS.

Measured per run: the collector's CPU time (rusage of the process, all threads, start to exit)
per entry, i.e. entries/s per collector core; the uploader's CPU per entry (the cost on each
host); bytes per entry of the collector's files (allocated, used up to the last object, and used
less the fixed hash tables). From bench/results.md's per-host rates: hosts per collector.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
from measure import BRIDGE, LABEL
from systemd import journal

ROOT = Path(__file__).parents[1]
REMOTE = "/lib/systemd/systemd-journal-remote"
UPLOAD = "/lib/systemd/systemd-journal-upload"
IMAGE = "bridge-test/busybox:latest"
PAD = "x" * 80
RESULTS = ROOT / "bench" / "results.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return result


def kill(process: subprocess.Popen[bytes]) -> None:
    """Ends a child that a failed run left behind."""
    if process.returncode is None and process.poll() is None:
        process.kill()
        process.wait(30)


def run_to_exit(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Reaps the process; (exit status, CPU seconds of all its threads over its life)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime


class Namespace:
    """A real systemd-journald serving one namespace, volatile, rate limiting off."""

    def __init__(self) -> None:
        self.name = f"jbfleet{uuid.uuid4().hex[:8]}"
        self.socket = f"/run/systemd/journal.{self.name}/socket"
        self.conf = Path(f"/etc/systemd/journald@{self.name}.conf")
        self.conf.write_text("[Journal]\nRateLimitBurst=0\nStorage=volatile\nRuntimeMaxUse=4G\n")
        machine_id = Path("/etc/machine-id").read_text().strip()
        self.directory = Path(f"/run/log/journal/{machine_id}.{self.name}")
        self.process = subprocess.Popen(
            ["/lib/systemd/systemd-journald", self.name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: os.path.exists(self.socket), 10, "journald's socket")
        # A namespace instance exits after 30 s without clients; an open stdout stream keeps it.
        self.keepalive = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        wait_until(self._connect, 10, "journald's stdout socket")
        self.keepalive.sendall(b"journald-bridge-bench\n\n6\n0\n0\n0\n0\n")

    def _connect(self) -> bool:
        try:
            self.keepalive.connect(os.path.join(os.path.dirname(self.socket), "stdout"))
            return True
        except OSError:
            return False

    def count(self, **matches: str) -> int:
        reader = journal.Reader(namespace=self.name)
        try:
            for key, value in matches.items():
                reader.add_match(**{key: value})
            return sum(1 for _ in reader)
        finally:
            reader.close()

    def has(self, message: str) -> bool:
        reader = journal.Reader(namespace=self.name)
        try:
            reader.add_match(MESSAGE=message)
            return reader.get_next() != {}
        finally:
            reader.close()

    def close(self) -> None:
        self.keepalive.close()
        self.process.terminate()
        self.process.wait(30)
        self.conf.unlink(missing_ok=True)
        shutil.rmtree(self.directory, ignore_errors=True)


class Bridge:
    def __init__(self, workdir: Path, namespace: Namespace, label: str) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "bridge.toml"
        config.write_text(
            f'[journal]\nsocket = "{namespace.socket}"\nnamespace = "{namespace.name}"\n'
            f'[state]\ndirectory = "{workdir / "state"}"\n'
            f'[filter]\ninclude_labels = ["{LABEL}={label}"]\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.port}"\n'
        )
        self.process = subprocess.Popen(
            [BRIDGE, "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "bridge.log", "wb"),  # noqa: SIM115 -- the child's
        )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the bridge exited: {(workdir / 'bridge.log').read_text()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(ready, 60, "the bridge")
        time.sleep(1)  # its start-up marker and read-back are done well within this

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
            raise


def fill(client: Any, workdir: Path, namespace: Namespace, containers: int, lines: int) -> int:
    """The bridge forwards `containers` x `lines` lines into the namespace; returns the
    namespace's entry count (journald's own and the bridge's marker entries included)."""
    label = uuid.uuid4().hex[:8]
    bridge = Bridge(workdir, namespace, label)
    tags = [f"f{label}{n}" for n in range(containers)]
    started = []
    try:
        for n, tag in enumerate(tags):
            script = (
                f"awk 'BEGIN{{for(i=1;i<={lines};i++) printf \"{tag} %08d {PAD}\\n\", i}}'; "
                f"echo END-{tag}"
            )
            started.append(
                client.containers.run(
                    IMAGE,
                    ["sh", "-c", script],
                    name=f"shop-web-{label}-{n}",
                    detach=True,
                    network_disabled=True,  # see tests/integration/dockerd.py
                    network_mode="none",
                    labels={
                        LABEL: label,
                        "com.docker.compose.project": "shop",
                        "com.docker.compose.service": "web",
                    },
                )
            )
        wait_until(
            lambda: all(namespace.has(f"END-{t}") for t in tags),
            600,
            "every container's last line in the namespace",
            interval=1,
        )
    finally:
        try:
            bridge.stop()
        finally:
            for c in started:
                c.remove(force=True)
    return namespace.count()


class Collector:
    def __init__(self, workdir: Path, pki: Path | None) -> None:
        self.output = workdir / f"remote-{uuid.uuid4().hex[:6]}"
        self.output.mkdir()
        self.port = free_port()
        if pki is None:
            self.url = f"http://127.0.0.1:{self.port}"
            listen = [f"--listen-http=127.0.0.1:{self.port}"]
        else:
            self.url = f"https://localhost:{self.port}"
            listen = [
                f"--listen-https=127.0.0.1:{self.port}",
                f"--key={pki / 'localhost.key'}",
                f"--cert={pki / 'localhost.crt'}",
            ]
        self.process = subprocess.Popen(
            [REMOTE, *listen, "--split-mode=host", f"--output={self.output}/"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, 10, "journal-remote")
        self.threads = int(
            re.search(r"Threads:\s+(\d+)", Path(f"/proc/{self.process.pid}/status").read_text())[1]
        )

    def stop(self) -> float:
        """Stops it (its files closed and written); returns its CPU seconds."""
        self.process.send_signal(signal.SIGTERM)
        code, cpu = run_to_exit(self.process)
        if code != 0:
            raise RuntimeError(f"journal-remote exited with {code}")
        return cpu


def uploader(
    collector: Collector, directory: Path, pki: Path | None, state: Path, follow: bool
) -> subprocess.Popen[bytes]:
    """systemd-journal-upload; its messages go to STATE.log."""
    tls = []
    if pki is not None:
        tls = [
            f"--key={pki / 'host1.key'}",
            f"--cert={pki / 'host1.crt'}",
            f"--trust={pki / 'ca.crt'}",
        ]
    with open(f"{state}.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                UPLOAD,
                f"--url={collector.url}",
                *tls,
                f"--save-state={state}",
                f"--directory={directory}",
                f"--follow={'yes' if follow else 'no'}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


HEADER = struct.Struct("<8sII")  # signature, compatible, incompatible flags


def journal_bytes(directory: Path) -> dict[str, int]:
    """Allocated bytes, bytes used up to the end of the last object, the fixed hash tables, and
    the entries, summed over a directory's journal files (JOURNAL_FILE_FORMAT.md's header)."""
    out = {"allocated": 0, "used": 0, "hash_tables": 0, "entries": 0}
    for path in directory.glob("*.journal*"):
        with open(path, "rb") as f:
            head = f.read(256)
            signature, _, _ = HEADER.unpack_from(head)
            assert signature == b"LPKSHHRH", path
            header_size, _arena, _dho, data_ht, _fho, field_ht, tail = struct.unpack_from(
                "<7Q", head, 88
            )
            n_entries = struct.unpack_from("<Q", head, 152)[0]
            f.seek(tail + 8)
            tail_size = struct.unpack("<Q", f.read(8))[0]
        out["allocated"] += path.stat().st_blocks * 512
        out["used"] += tail + (tail_size + 7) // 8 * 8
        out["hash_tables"] += header_size + data_ht + field_ht
        out["entries"] += n_entries
    return out


def catch_up(workdir: Path, namespace: Namespace, entries: int, pki: Path | None) -> dict[str, Any]:
    collector = Collector(workdir, pki)
    state = workdir / f"upload-{uuid.uuid4().hex[:6]}.state"
    try:
        start = time.monotonic()
        upload = uploader(collector, namespace.directory, pki, state, follow=False)
        code, upload_cpu = run_to_exit(upload)
        wall = time.monotonic() - start
        if code != 0:
            log = Path(f"{state}.log").read_text()
            raise RuntimeError(f"journal-upload exited with {code}: {log}")
        remote_cpu = collector.stop()
    finally:
        kill(collector.process)
    size = journal_bytes(collector.output)
    if size["entries"] != entries:
        raise RuntimeError(f"{size['entries']} entries at the collector, {entries} sent")
    shutil.rmtree(collector.output)
    return {
        "entries": entries,
        "seconds": wall,
        "entries_per_second": entries / wall,
        "collector_cpu_s": remote_cpu,
        "collector_entries_per_core_second": entries / remote_cpu,
        "collector_threads": collector.threads,
        "uploader_us_per_entry": upload_cpu / entries * 1e6,
        **{f"{k}_bytes_per_entry": v / entries for k, v in size.items() if k != "entries"},
    }


def live(
    client: Any, workdir: Path, containers: int, lines: int, pki: Path | None
) -> dict[str, Any]:
    """An uploader follows the namespace while the bridge fills it (steady state: many POSTs)."""
    namespace = Namespace()
    try:
        collector = Collector(workdir, pki)
        state = workdir / f"upload-{uuid.uuid4().hex[:6]}.state"
        upload = uploader(collector, namespace.directory, pki, state, follow=True)
        try:
            start = time.monotonic()
            entries = fill(client, workdir / "live", namespace, containers, lines)

            def caught_up() -> bool:
                return journal_bytes_entries(collector.output) >= entries

            wait_until(caught_up, 300, "the collector to catch up", interval=0.5)
            wall = time.monotonic() - start
            upload.send_signal(signal.SIGTERM)
            _, upload_cpu = run_to_exit(upload)
            remote_cpu = collector.stop()
        finally:
            kill(upload)
            kill(collector.process)
        size = journal_bytes(collector.output)
        return {
            "entries": entries,
            "collected": size["entries"],
            "seconds": wall,
            "collector_cpu_s": remote_cpu,
            "collector_entries_per_core_second": size["entries"] / remote_cpu,
            "uploader_us_per_entry": upload_cpu / size["entries"] * 1e6,
            "used_bytes_per_entry": size["used"] / size["entries"],
        }
    finally:
        namespace.close()


def journal_bytes_entries(directory: Path) -> int:
    """Entries in a collector's files while it writes them (the header's count)."""
    total = 0
    for path in directory.glob("*.journal*"):
        with open(path, "rb") as f:
            head = f.read(160)
        if len(head) == 160:
            total += struct.unpack_from("<Q", head, 152)[0]
    return total


def bench_rates() -> dict[str, float]:
    """Per-host line rates of `make bench` (bench/results.md): what one host sends."""
    text = RESULTS.read_text()
    raw = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
    latency = re.search(r"latency \((\d+) containers x (\d+) lines/s", text)
    scale = re.search(r"scale \((\d+) idle \+ (\d+) at (\d+) lines/s\)", text)
    assert latency and scale, "bench/results.md lacks the latency or scale scenario"
    return {
        "throughput, the most one host forwarded": raw["throughput"]["median"]["bridge"],
        f"latency scenario ({latency[1]} containers x {latency[2]} lines/s)": int(latency[1])
        * int(latency[2]),
        f"scale scenario ({scale[2]} containers x {scale[3]} lines/s, {scale[1]} idle)": int(
            scale[2]
        )
        * int(scale[3]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--containers", type=int, default=4)
    parser.add_argument("--lines", type=int, default=50000, help="per container")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    for binary in (REMOTE, UPLOAD):
        if not os.access(binary, os.X_OK):
            print(f"{binary} is missing: run scripts/setup-test.sh", file=sys.stderr)
            return 1

    workdir = Path(tempfile.mkdtemp(prefix="jb-fleet-"))
    try:
        return measure(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(args: argparse.Namespace, workdir: Path) -> int:
    client = docker.from_env(version="1.41", timeout=300)
    pki = workdir / "pki"
    ca = str(ROOT / "deploy" / "fleet" / "fleet-ca.sh")
    for args_ in (["init"], ["collector", "localhost", "127.0.0.1"], ["host", "host1"]):
        subprocess.run([ca, str(pki), *args_], check=True, capture_output=True)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_before": os.getloadavg(),
    }
    namespace = Namespace()
    try:
        t0 = time.monotonic()
        entries = fill(client, workdir / "fill", namespace, args.containers, args.lines)
        fill_seconds = time.monotonic() - t0
        host = journal_bytes(namespace.directory)
        print(
            f"fill: {entries:,} entries in the namespace in {fill_seconds:.1f} s; host journal: "
            f"{host['used'] / host['entries']:.0f} bytes/entry used, "
            f"{(host['used'] - host['hash_tables']) / host['entries']:.0f} without the hash tables",
            flush=True,
        )
        runs: dict[str, list[dict[str, Any]]] = {"http": [], "https": []}
        for rep in range(args.reps):
            for mode in ("http", "https") if rep % 2 == 0 else ("https", "http"):
                r = catch_up(workdir, namespace, entries, pki if mode == "https" else None)
                runs[mode].append(r)
                print(
                    f"catch-up {mode}: {r['entries_per_second']:,.0f} entries/s, collector "
                    f"{r['collector_entries_per_core_second']:,.0f} entries per CPU-second "
                    f"({r['collector_cpu_s']:.2f} s), uploader {r['uploader_us_per_entry']:.1f} "
                    f"µs/entry; bytes/entry: {r['allocated_bytes_per_entry']:.0f} allocated, "
                    f"{r['used_bytes_per_entry']:.0f} used, "
                    f"{r['used_bytes_per_entry'] - r['hash_tables_bytes_per_entry']:.0f} "
                    "without the hash tables",
                    flush=True,
                )
        results["host_journal"] = {k: v / host["entries"] for k, v in host.items()}
    finally:
        namespace.close()
    results["catch_up"] = runs
    median = {
        mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for mode, rs in runs.items()
    }
    results["catch_up_median"] = median

    live_run = live(client, workdir, args.containers, args.lines, pki)
    results["live_https"] = live_run
    print(
        f"live https (uploader following the bridge): {live_run['collected']:,} entries, collector "
        f"{live_run['collector_entries_per_core_second']:,.0f} entries per CPU-second, uploader "
        f"{live_run['uploader_us_per_entry']:.1f} µs/entry",
        flush=True,
    )

    # One collector process is one core: systemd-journal-remote runs one event loop.
    per_core = min(
        median["https"]["collector_entries_per_core_second"],
        live_run["collector_entries_per_core_second"],
    )
    used = median["https"]["used_bytes_per_entry"]
    results["hosts_per_collector"] = {}
    print(
        f"\nmedian of {args.reps}: one collector core takes {per_core:,.0f} entries/s "
        f"(HTTPS, the lower of catch-up and live); {used:.0f} bytes/entry on disk"
    )
    for name, rate in bench_rates().items():
        hosts = per_core / rate
        gib_day = rate * used * 86400 / 2**30
        results["hosts_per_collector"][name] = {
            "lines_per_second": rate,
            "hosts": hosts,
            "GiB_per_host_day": gib_day,
        }
        print(
            f"  {name}: {rate:,.0f} lines/s per host -> {hosts:,.1f} hosts per collector core; "
            f"{gib_day:,.1f} GiB a day per host at the collector"
        )
    results["loadavg_after"] = os.getloadavg()
    print(
        f"load average before/after: {results['loadavg_before'][0]:.1f} / "
        f"{results['loadavg_after'][0]:.1f} (1 min)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
