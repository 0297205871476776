"""Whether a file can be a journal sd-journal would read: its fixed header, checked in Python.

The bridge decides with this whether a container's journal is worth a worker process, without
running sd-journal (C code) over the container's bytes in its own, privileged process. Pure:
`problem(head, size)` looks at the first `HEADER_READ` bytes and the file's size only. It
refuses what sd-journal's `journal_file_verify_header` refuses for a file opened read-only and
that those bytes can tell: no "LPKSHHRH" signature, a header shorter than the oldest format's,
an incompatible flag sd-journal does not know, a header or arena past the end of the file, an
unaligned size or a tail object outside the arena. A file that passes may still be damaged
further on: the worker finds that out, unprivileged.
"""

from __future__ import annotations

import os
import struct

SIGNATURE = b"LPKSHHRH"
HEADER_MIN = 208  # offsetof(Header, n_data): the header of systemd 186, the oldest readable
HEADER_READ = 256
# journal-def.h: COMPRESSED_XZ, COMPRESSED_LZ4, KEYED_HASH, COMPRESSED_ZSTD, COMPACT
KNOWN_INCOMPATIBLE = 0x1F
STATES = (0, 1, 2)  # offline, online, archived
# signature, compatible flags, incompatible flags, state, 7 reserved, 4 ids of 16 bytes,
# header_size, arena_size, 4 hash-table fields, tail_object_offset
_HEAD = struct.Struct("<8sIIB7x64sQQ32xQ")


def problem(head: bytes, size: int) -> str | None:
    """Why a file that starts with `head` and is `size` bytes long cannot be read; None when
    its header is sound."""
    if size < HEADER_MIN or len(head) < _HEAD.size:
        return "shorter than a journal header"
    signature, _, incompatible, state, _, header_size, arena_size, tail = _HEAD.unpack_from(head)
    if signature != SIGNATURE:
        return "not a journal file"
    if incompatible & ~KNOWN_INCOMPATIBLE:
        return f"unknown incompatible flags {incompatible:#x}"
    if state not in STATES:
        return f"unknown state {state}"
    if header_size < HEADER_MIN or header_size % 8:
        return f"bad header size {header_size}"
    end = header_size + arena_size
    if end > size:
        return "its header says it is longer than it is"
    if tail and not header_size <= tail < end:
        return "its last object lies outside it"
    return None


def read_problem(fd: int) -> str | None:
    """`problem` of the open regular file `fd` (raises OSError)."""
    size = os.fstat(fd).st_size
    return problem(os.pread(fd, HEADER_READ, 0), size)
