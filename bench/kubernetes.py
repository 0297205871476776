"""The Kubernetes source against Docker's log files, on the same machine in one run.

What is compared: the bridge itself. Each repetition writes the same lines twice while the
bridge is down, once through dockerd (json-file, read from Docker's files) and once through a
real containerd's CRI logger into an emulated kubelet's /var/log/pods (the private containerd
of scripts/setup-cri.sh, as in tests/integration/kubernetes). Then the bridge starts with only
that source, and the figures are its catch-up rate (lines/s from its start until the last line
is in the journal, timed by journald's own receive stamps) and the CPU it spent per line
(utime + stime of its process). The two paths alternate within the run; medians are reported.

    .venv/bin/python bench/kubernetes.py [--containers 4] [--lines 100000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
from measure import BRIDGE, IMAGE, LABEL, cpu_seconds, wait_for_messages

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.sources.kubernetes.cri import CriClient  # noqa: E402
from tests.integration.kubernetes.kubelet import Kubelet  # noqa: E402

CRI_DIR = Path("/var/lib/journald-bridge-cri")
PAD = "x" * 80


def script(tag: str, count: int) -> str:
    body = f"awk 'BEGIN{{for(i=1;i<={count};i++) printf \"{tag} %08d {PAD}\\n\", i}}'"
    return f"{body}; echo END-{tag}"


class Bridge:
    def __init__(self, workdir: Path, config: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / "bridge.toml"
        self.path.write_text(config + f'[state]\ndirectory = "{workdir / "state"}"\n')
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.process = subprocess.Popen(
            [BRIDGE, "run", "--config", str(self.path)], stderr=subprocess.DEVNULL
        )
        return self.process.pid

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(60)


def once(path: str, bridge: Bridge, write: Any, containers: int, lines: int) -> dict[str, float]:
    tag = f"k{uuid.uuid4().hex[:6]}"
    tags = [f"{tag}-{n}" for n in range(containers)]
    write(tags)
    started = time.time()
    pid = bridge.start()
    cpu0 = cpu_seconds(pid)
    done = wait_for_messages([f"END-{t}" for t in tags], 900)
    used = cpu_seconds(pid) - cpu0
    bridge.stop()
    total = containers * (lines + 1)
    return {
        "lines_per_second": round(total / (done - started)),
        "cpu_us_per_line": round(used / total * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=4)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    subprocess.run([str(ROOT / "scripts" / "setup-cri.sh")], check=True)
    label = uuid.uuid4().hex[:12]
    client = docker.from_env(timeout=300)
    cri = CriClient(str(CRI_DIR / "containerd.sock"), timeout=60)
    base = CRI_DIR / "pods" / f"bench-{label}"
    kubelet = Kubelet(cri, str(base / "pods"), str(base / "containers"))
    (base / "pods").mkdir(parents=True)
    (base / "containers").mkdir()
    work = Path(tempfile.mkdtemp(prefix="bench-k8s-"))
    docker_bridge = Bridge(
        work / "docker",
        f'[docker]\nsource = "files"\n[kubernetes]\nenabled = false\n'
        f'[filter]\ninclude_labels = ["{LABEL}={label}"]\n[inner_journal]\nenabled = false\n',
    )
    k8s_bridge = Bridge(
        work / "kubernetes",
        f"[docker]\nenabled = false\n[inner_journal]\nenabled = false\n"
        f'[kubernetes]\nenabled = true\npods_dir = "{base / "pods"}"\n'
        f'cri_socket = "{CRI_DIR / "containerd.sock"}"\n',
    )
    for bridge in (docker_bridge, k8s_bridge):  # first runs: later containers from line 1
        bridge.start()
        time.sleep(3)
        bridge.stop()

    def write_docker(tags: list[str]) -> None:
        started = [
            client.containers.run(
                IMAGE,
                ["sh", "-c", script(t, args.lines)],
                detach=True,
                labels={LABEL: label},
                log_config={"type": "json-file"},
            )
            for t in tags
        ]
        for c in started:
            c.wait(timeout=600)

    def write_pods(tags: list[str]) -> None:
        made = []
        for t in tags:
            pod = kubelet.run_pod(t, "bench")
            made.append(kubelet.start(pod, "main", script(t, args.lines)))
        for c in made:
            kubelet.wait_exited(c, timeout=600)

    runs: dict[str, list[dict[str, float]]] = {"docker_files": [], "kubernetes": []}
    try:
        for rep in range(args.reps):
            for name, bridge, write in (
                ("docker_files", docker_bridge, write_docker),
                ("kubernetes", k8s_bridge, write_pods),
            ):
                run = once(name, bridge, write, args.containers, args.lines)
                runs[name].append(run)
                print(f"rep {rep + 1} {name}: {run}", flush=True)
            for c in client.containers.list(all=True, filters={"label": f"{LABEL}={label}"}):
                c.remove(force=True)
            for pod in list(kubelet.pods):
                kubelet.delete_pod(pod)
    finally:
        kubelet.close()
        subprocess.run(["rm", "-rf", str(base), str(work)], check=False)
    summary = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()
    }
    ratio = summary["kubernetes"]["lines_per_second"] / summary["docker_files"]["lines_per_second"]
    print(
        json.dumps(
            {
                "median": summary,
                "kubernetes_to_docker_lines_per_second": round(ratio, 2),
                "runs": runs,
                "containers": args.containers,
                "lines": args.lines,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
