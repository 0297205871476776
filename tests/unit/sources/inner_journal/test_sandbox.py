"""The confined worker: no capability, no new privileges, no path, no other process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.sources.inner_journal import InnerJournalFollower, sandbox

from .journals import MACHINE_ID, entry, journal_dir, needs_journal_remote, write
from .test_follower import FAST, Run

pytestmark = pytest.mark.skipif(not sandbox.FILTERED, reason="the syscall filter is x86_64's")

# run in a child: what a worker taken over by a hostile journal would try, once confined
ATTEMPTS = """
import ctypes, json, os, resource, socket, sys
from bridge.sources.inner_journal import sandbox
held = os.open(sys.argv[1], os.O_RDONLY)
sandbox.confine()
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "allowed"
    except OSError as exc:
        results[name] = exc.errno
attempt("open", lambda: open(sys.argv[2], "rb"))
attempt("open_parent_root", lambda: os.open(f"/proc/{os.getppid()}/root/etc/hostname", 0))
attempt("openat", lambda: os.open("hostname", os.O_RDONLY, dir_fd=os.open("/etc", 0)))
attempt("socket", lambda: socket.socket(socket.AF_UNIX))
attempt("kill", lambda: os.kill(os.getppid(), 0))
attempt("pidfd_open", lambda: os.pidfd_open(os.getppid()))
attempt("execve", lambda: os.execv("/bin/true", ["true"]))
libc = ctypes.CDLL(None, use_errno=True)
def ptrace():
    if libc.ptrace(16, os.getppid(), 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
attempt("ptrace", ptrace)
attempt("realtime", lambda: os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1)))
attempt("priority", lambda: os.setpriority(os.PRIO_PROCESS, 0, -5))
results["held"] = os.pread(held, 5, 0).decode()
results["limits"] = [resource.getrlimit(resource.RLIMIT_RTPRIO), resource.getrlimit(resource.RLIMIT_NICE)]
print(json.dumps(results))
"""


def test_a_confined_process_opens_no_host_path_and_reaches_no_process(tmp_path: Path) -> None:
    mine = tmp_path / "journal"
    mine.write_text("mine!")
    host = tmp_path / "host-secret"
    host.write_text("secret")
    done = subprocess.run(
        [sys.executable, "-I", "-c", ATTEMPTS, str(mine), str(host)],
        capture_output=True,
        check=True,
        timeout=30,
    )
    results = json.loads(done.stdout)
    assert results.pop("held") == "mine!"  # what it was given it still reads
    assert results.pop("limits") == [[0, 0], [0, 0]]  # no priority to raise, even by exec
    assert results == dict.fromkeys(results, 1), results  # everything else: EPERM
    assert sorted(results) == sorted(
        ["open", "open_parent_root", "openat", "socket", "kill", "pidfd_open", "execve", "ptrace",
         "realtime", "priority"]
    )  # fmt: skip


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


@needs_journal_remote
def test_the_worker_reads_with_no_capability_and_under_the_filter(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(journal_dir(root) / "system.journal", [entry(1)])
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    run = Run(InnerJournalFollower(fd, name="test", options=FAST))
    try:
        assert run.wait_messages(1) == [b"line 1"]
        pid = run.follower.worker_pid
        assert pid is not None
        time.sleep(0.2)
        worker = status(pid)
        held = [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]
    finally:
        run.finish()
    assert os.geteuid() != 0 or status(os.getpid())["CapEff"] != "0" * 16  # we had some
    for capabilities in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert worker[capabilities] == "0" * 16, (capabilities, worker[capabilities])
    assert worker["NoNewPrivs"] == "1"
    assert worker["Seccomp"] == "2"
    # the journal file and its duplicate; the container's root is the bridge's, not the worker's
    assert [link for link in held if str(tmp_path) in link] == [
        str(root / "var/log/journal" / MACHINE_ID / "system.journal")
    ] * 2


# the bridge as the unit runs it: not root, two ambient capabilities, no_new_privs, and a
# syscall filter that refuses capset (the unit's ~@privileged)
AS_THE_UNIT = """
import ctypes, json, os, sys, time
from bridge.sources.inner_journal import InnerJournalFollower, WorkerOptions, sandbox
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0
program = sandbox.filter_program({"capset": 126})
buffer = ctypes.create_string_buffer(program, len(program))
prog = sandbox._SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0
root = os.open(sys.argv[1], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
options = WorkerOptions(poll_seconds=0.1, heartbeat_seconds=0.1)
follower = InnerJournalFollower(root, name="unit", options=options)
messages, status = [], {}
for event in follower:
    messages.append(event.message.decode())
    pid = follower.worker_pid
    time.sleep(0.3)
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip().split(":\\t", 1) for line in f if line.startswith(("Cap", "Uid")))
    break
follower.close()
with open("/proc/self/status") as f:
    mine = [line.split()[1] for line in f if line.startswith("CapEff")][0]
print(json.dumps({"messages": messages, "worker": status, "bridge": mine}))
"""


@needs_journal_remote
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("unshare"),
    reason="needs root, setpriv and unshare",
)
@pytest.mark.parametrize("proc_sys", ["shown", "hidden"])
def test_under_the_unit_s_filter_the_worker_sheds_its_capabilities_by_exec(
    tmp_path: Path, proc_sys: str
) -> None:
    """`hidden`: the unit's ProcSubset=pid leaves /proc/sys out (the worker once read the
    number of capabilities there, and under the unit every worker exited at once)."""
    root = tmp_path / "root"
    write(journal_dir(root) / "system.journal", [entry(1)])
    os.chmod(tmp_path, 0o700)  # only CAP_DAC_READ_SEARCH gets nobody in
    caps = "+dac_read_search,+sys_ptrace"
    hide = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount -t tmpfs none /proc/sys && exec "$@"', "hide"]  # fmt: skip
    done = subprocess.run(
        [
            *(hide if proc_sys == "hidden" else []),
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}", "--",
            sys.executable, "-I", "-c", AS_THE_UNIT, str(root),
        ],
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout)
    assert result["messages"] == ["line 1"]
    assert int(result["bridge"], 16) != 0  # the bridge had its capabilities
    for name in ("CapEff", "CapPrm", "CapAmb"):  # CapInh stays: no use without these
        assert result["worker"][name] == "0" * 16, (name, result["worker"])
    assert result["worker"]["Uid"].split()[0] == "65534"
