"""What the worker gives up before it parses a byte of a container's journal.

The worker runs sd-journal (C code) over files a container wrote; a parser bug there must not
give the container's author anything of the host. `confine()` makes the calling process:

- hold no capability: effective, permitted and inheritable sets cleared (capset), the ambient
  set cleared, and the bounding set emptied where the process may (CAP_SETPCAP; the unit does
  not give it, and no_new_privs keeps a later exec from gaining any anyway). The unit's own
  filter (`~@privileged`) refuses capset: there `CapsetRefused` tells the caller to exec itself
  again, which, the ambient set cleared and the user not root, leaves it no effective,
  permitted or ambient capability (the inheritable set stays, and is no use: see `held`);
- `no_new_privs`: no exec can raise its privileges again;
- no way to raise its scheduling priority: RLIMIT_RTPRIO and RLIMIT_NICE lowered to 0 (the unit
  grants real time for the log file opener, and every process of the unit inherits the limit),
  and the calls that change a policy or a priority refused by the filter;
- unable to name a file or reach another process (x86_64): a seccomp filter answers EPERM to
  every system call that opens, creates or changes a path, executes, makes a socket, signals,
  traces or reads another process (ptrace, pidfd_getfd, process_vm_readv), or could do any of
  those behind the filter's back (io_uring). What is left works on fds it already holds: read,
  mmap, fstat, write to its pipe, poll, exit. Any other architecture gets no filter, and
  `FILTERED` says so (the worker reports it once).

Only the worker imports this module; it must have imported everything it will ever need
first (an import opens files).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct

_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CAPABILITY_VERSION_3 = 0x20080522

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_KILL_PROCESS = 0x80000000

# x86_64 numbers (asm/unistd_64.h); see the module for why each is here
DENIED_X86_64 = {
    # paths: open, create, change
    "open": 2, "creat": 85, "openat": 257, "openat2": 437, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "mknod": 133, "mknodat": 259, "link": 86, "linkat": 265,
    "symlink": 88, "symlinkat": 266, "unlink": 87, "unlinkat": 263, "rename": 82,
    "renameat": 264, "renameat2": 316, "mkdir": 83, "mkdirat": 258, "rmdir": 84,
    "truncate": 76, "chmod": 90, "fchmodat": 268, "chown": 92, "lchown": 94, "fchownat": 260,
    "utimensat": 280, "inotify_add_watch": 254, "fanotify_init": 300, "fanotify_mark": 301,
    "uselib": 134, "acct": 163, "quotactl": 179,
    # mounts and namespaces
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "unshare": 272, "setns": 308,
    # programs, sockets, other processes
    "execve": 59, "execveat": 322, "socket": 41, "socketpair": 53, "connect": 42, "bind": 49,
    "listen": 50, "accept": 43, "accept4": 288, "ptrace": 101, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "pidfd_open": 434, "pidfd_getfd": 438,
    "pidfd_send_signal": 424, "kill": 62, "tkill": 200, "tgkill": 234,
    # ways around the filter, and kernel interfaces a reader has no use for
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "add_key": 248,
    "request_key": 249,
    # scheduling: real time or a raised priority would let it starve the host
    "setpriority": 141, "sched_setparam": 142, "sched_setscheduler": 144, "sched_setattr": 314,
}  # fmt: skip

FILTERED = platform.machine() == "x86_64"

_libc = ctypes.CDLL(None, use_errno=True)


class CapsetRefused(OSError):
    """capset(2) was refused (a seccomp filter) while capabilities are still held."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg: int = 0) -> int:
    return int(
        _libc.prctl(
            ctypes.c_int(option),
            ctypes.c_ulong(arg),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
    )


def drop_capabilities() -> None:
    """Clears every capability set this process may clear (see the module)."""
    for cap in range(last_capability() + 1):
        if _prctl(_PR_CAPBSET_DROP, cap) != 0 and ctypes.get_errno() not in (
            errno.EPERM,
            errno.EINVAL,
        ):
            _check(-1, "PR_CAPBSET_DROP")
    _check(_prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL), "PR_CAP_AMBIENT_CLEAR_ALL")
    header = struct.pack("=Ii", _CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two of {effective, permitted, inheritable}: all zero
    if _libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(data)) != 0:
        err = ctypes.get_errno()
        if err != errno.EPERM:
            _check(-1, "capset")
        if held():
            raise CapsetRefused(err, "capset refused while capabilities are held")


def last_capability() -> int:
    """The kernel's highest capability number, asked of the kernel itself: the unit's
    `ProcSubset=pid` hides /proc/sys (and its kernel/cap_last_cap) from the bridge and its
    workers. PR_CAPBSET_READ answers EINVAL past the last one, whatever the caller holds."""
    last = -1
    while last < 63 and _prctl(_PR_CAPBSET_READ, last + 1) >= 0:
        last += 1
    if last < 0:
        _check(-1, "PR_CAPBSET_READ")
    return last


def held() -> bool:
    """Whether this process holds a capability it could use: effective, permitted or ambient.
    (An inheritable set is no use without them: raising an ambient capability needs it
    permitted too, and under no_new_privs no exec grants file capabilities.)"""
    with open("/proc/self/status") as f:
        sets = dict(line.split(":", 1) for line in f if line.startswith("Cap"))
    return any(int(sets[name], 16) for name in ("CapEff", "CapPrm", "CapAmb"))


def filter_program(denied: dict[str, int]) -> bytes:
    """The classic BPF program of the seccomp filter: EPERM for `denied`, allow the rest;
    kill a process that calls in through another ABI (i386, x32), which has other numbers."""

    def stmt(code: int, k: int) -> bytes:
        return struct.pack("=HBBI", code, 0, 0, k)

    def jump(code: int, k: int, jt: int, jf: int) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    deny = _SECCOMP_RET_ERRNO | errno.EPERM
    prog = [
        stmt(ld_w_abs, 4),  # seccomp_data.arch
        jump(jeq_k, _AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret_k, _SECCOMP_RET_KILL_PROCESS),
        stmt(ld_w_abs, 0),  # seccomp_data.nr
        jump(jge_k, _X32_SYSCALL_BIT, 0, 1),
        stmt(ret_k, _SECCOMP_RET_KILL_PROCESS),
    ]
    for number in sorted(set(denied.values())):
        prog.append(jump(jeq_k, number, 0, 1))
        prog.append(stmt(ret_k, deny))
    prog.append(stmt(ret_k, _SECCOMP_RET_ALLOW))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def install_filter() -> bool:
    """Installs the seccomp filter (no_new_privs must be set); False where there is none."""
    if not FILTERED:
        return False
    program = filter_program(DENIED_X86_64)
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    result = _libc.prctl(
        ctypes.c_int(_PR_SET_SECCOMP),
        ctypes.c_ulong(_SECCOMP_MODE_FILTER),
        ctypes.byref(prog),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    _check(int(result), "PR_SET_SECCOMP")
    return True


def confine() -> bool:
    """All of the module's steps, in order; True when the syscall filter is in place.
    Raises OSError when a step fails: a worker that cannot confine itself must not parse."""
    drop_capabilities()
    _check(_prctl(_PR_SET_NO_NEW_PRIVS, 1), "PR_SET_NO_NEW_PRIVS")
    for limit in (resource.RLIMIT_RTPRIO, resource.RLIMIT_NICE):
        resource.setrlimit(limit, (0, 0))  # lowering needs no privilege; raising it again does
    return install_filter()
