"""Where an engine keeps its containers' log files, and in which format. Pure, no I/O.

One `LogFileSource` (and its one inotify watcher) serves one engine; its layout says where to
look: `<root>/<containers>/<id>/`, a log in that directory, and/or one in a subdirectory.

Docker (dockerd 20.10, measured here): root is `docker info`'s DockerRootDir. The directory
`containers/<id>/` and its config.v2.json/hostconfig.json exist from `create`; `<id>-json.log`
(json-file) or `local-logs/container.log` (local) appears at `start`; `--rm` deletes the
directory 24-680 ms after `die`. Rotated files keep names (`P.1` ..): see rotation/numbered.py.

Podman (4.3.1, conmon 2.1.6, root, measured here): root is `podman info`'s graphRoot
(/var/lib/containers/storage here), which the compat API's `/info` reports as DockerRootDir,
with `Driver` "overlay": the log is `<root>/overlay-containers/<id>/userdata/ctr.log`, in
k8s-file format (formats/k8sfile.py), `podman inspect -f '{{.HostConfig.LogConfig.Path}}'`.
- `create` makes `<id>/`, then `<id>/userdata/` (artifacts/, secrets/, shm/) a fraction of a
  millisecond later; conmon creates ctr.log (O_APPEND|O_CREAT, so a restarted container
  appends to it) at `start`, before the container's process runs, and closes it at exit.
- `run --rm`: podman deletes ctr.log and the directory 60-80 ms after conmon closed ctr.log;
  with `run -d --rm` (conmon's cleanup process removes it) 90-140 ms after.
- `--log-opt max-size=N`: before a line that would pass N bytes, conmon fsyncs and closes
  ctr.log, creates ctr.log.tmp and renames it over ctr.log. The replaced file is unlinked at
  once and has no name: only a descriptor opened before reads it (`replaced` below). An
  unpaced `seq` with max-size=50k made a new file every 3-6 ms.
- The compat API's inspect gives `LogPath` = that ctr.log (or the file given with
  `--log-opt path=`, which this layout does not look for) and `HostConfig.LogConfig.Type`
  "json-file" for k8s-file (the libpod API says "k8s-file"); "journald" and "none" have no
  file. userdata/config.json is the OCI runtime spec, with neither the name nor the labels:
  metadata from disk is Docker's only (`config_files` is empty).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.sources.logfiles.formats import FORMATS, LogKind
from bridge.sources.logfiles.formats.lines import FileFormat

DOCKER_CONFIG_FILES = ("config.v2.json", "hostconfig.json")
_STORAGE_DRIVER = re.compile(r"[a-z0-9_]{1,32}")


@dataclass(frozen=True)
class Layout:
    engine: str  # "docker", "podman"
    containers: str  # under the root: one directory per container, named by its 64-hex id
    top_log: str | None  # the log in that directory ("{id}" is the container id), if any
    top_kind: LogKind | None
    sub_dir: str  # the subdirectory that holds the other log
    sub_log: str
    sub_kind: LogKind
    config_files: tuple[str, ...]  # read as the log appears, for on_disk (Docker only)
    # Rotation renames a new file over the log and the old one keeps no name (conmon): the
    # watcher's descriptor of each new file is the only way to it, and is handed over.
    replaced: bool
    drivers: Mapping[str, LogKind] = field(default_factory=dict)  # reported driver -> file kind

    def log_name(self, container_id: str, sub: bool) -> str | None:
        """The log's file name inside its directory (the container's, or `sub_dir`)."""
        if sub:
            return self.sub_log
        return self.top_log.replace("{id}", container_id) if self.top_log is not None else None

    def kind(self, sub: bool) -> LogKind:
        if sub:
            return self.sub_kind
        assert self.top_kind is not None
        return self.top_kind

    def path(self, root: str, container_id: str, log_driver: str) -> str | None:
        """The container's current log file for the driver the engine reports; None when that
        driver keeps no file here."""
        kind = self.drivers.get(log_driver)
        if kind is None:
            return None
        directory = os.path.join(root, self.containers, container_id)
        if kind == self.sub_kind:
            return os.path.join(directory, self.sub_dir, self.sub_log)
        return os.path.join(directory, self.log_name(container_id, sub=False) or "")

    def format(self, log_driver: str) -> FileFormat | None:
        kind = self.drivers.get(log_driver)
        return FORMATS[kind] if kind is not None else None


DOCKER = Layout(
    engine="docker",
    containers="containers",
    top_log="{id}-json.log",
    top_kind="json-file",
    sub_dir="local-logs",
    sub_log="container.log",
    sub_kind="local",
    config_files=DOCKER_CONFIG_FILES,
    replaced=False,
    drivers={"json-file": "json-file", "local": "local"},
)


def podman(storage_driver: str = "overlay") -> Layout:
    """Podman's layout for its storage driver (the compat `/info` `Driver`, "overlay" here).
    Raises ValueError for a name that is not a storage driver's."""
    if not _STORAGE_DRIVER.fullmatch(storage_driver):
        raise ValueError(f"not a storage driver: {storage_driver[:40]!r}")
    return Layout(
        engine="podman",
        containers=f"{storage_driver}-containers",
        top_log=None,
        top_kind=None,
        sub_dir="userdata",
        sub_log="ctr.log",
        sub_kind="k8s-file",
        config_files=(),
        replaced=True,
        # The compat API reports k8s-file as "json-file"; the libpod API as "k8s-file".
        drivers={"json-file": "k8s-file", "k8s-file": "k8s-file"},
    )


def for_engine(kind: str, info: Mapping[str, object]) -> Layout:
    """The layout of an engine of this kind ("docker", "podman"), given its `/info` answer."""
    if kind == "podman":
        return podman(str(info.get("Driver") or "overlay"))
    if kind == "docker":
        return DOCKER
    raise ValueError(f"no log-file layout for engine kind {kind!r}")
