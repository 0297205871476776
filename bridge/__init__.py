"""journald-bridge: every container's output in the host journal, exactly once.

The folders are the pipeline, and imports only run down it:

    app, cli      the lifecycle (start-up, reload, shutdown) and the command line; wire the rest
    service/      what the process shows systemd and Prometheus: HTTP endpoints, sd_notify
    sources/      where lines come from: engines, discovery, log files, the API stream, inner
                  journals; each source queues batches and knows no sink
    transforms/   per-container steps between source and sink (multiline, rate limit, JSON,
                  priority); pure, no clock, no I/O
    sinks/        where lines go: journald (encode, send, commit, read positions back)
    core/         what the others share: the queue, a container's handle, positions, records,
                  fields, the state file; imports nothing above it
    config        the typed config, loaded in one place (imports core only)
    telemetry     every metric, fed by named events; every layer reports to it as it logs,
                  and it imports nothing of the bridge (so no import runs upward)

`__version__` is the project's one version: setuptools reads it for the wheel (pyproject's
dynamic version), `make deb` and `make image` for the package version and the image tag, and
CHANGELOG.md's newest section must name it (tests/unit/test_version.py).
"""

from __future__ import annotations

__version__ = "0.1.0"
