"""The line formats of engines' log files, one module each, and the picker. Pure and I/O-free.

    lines      what every parser produces (FileLine), the LineParser protocol, FileFormat (what
               the file set needs of a format) and the parts the parsers share
    jsonfile   Docker's json-file: one JSON object a line
    local      Docker's local driver: length-framed protobuf entries
    k8sfile    conmon's k8s-file, the CRI log format (Podman)

`FORMATS` picks the format by its name (`LogKind`), which a layout maps from the log driver the
engine reports. Every parser keeps the invariants stated in `lines`.
"""

from __future__ import annotations

from typing import Literal

from bridge.sources.logfiles.formats.jsonfile import JSON_FILE
from bridge.sources.logfiles.formats.k8sfile import K8S_FILE
from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.formats.local import LOCAL

LogKind = Literal["json-file", "local", "k8s-file"]
FORMATS: dict[LogKind, FileFormat] = {"json-file": JSON_FILE, "local": LOCAL, "k8s-file": K8S_FILE}
