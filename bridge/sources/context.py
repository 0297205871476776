"""What one engine's sources share, passed down as one value.

An engine (engine.py) builds its `EngineContext` once it has connected, and hands it to its
discovery, its container table and their handle factory, instead of a dozen parameters each.
Everything in it is fixed for the run but `config`, a getter: a reload replaces the bridge's
config, and whoever needs a setting reads `ctx.config()` when it needs it. What must act at a
reload (new fields and transforms for every container, new filters) is pushed by
`Supervisor.reconfigure`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import docker

from bridge.config import Config, EngineConfig
from bridge.core.queue import PendingQueue
from bridge.core.state import ResumePoints
from bridge.sources.engine_api import EngineKind
from bridge.telemetry import Telemetry


@dataclass(frozen=True)
class EngineContext:
    name: str  # the engine's name: CONTAINER_ENGINE, the metrics' `engine` label
    host: str  # a remote engine's host name (CONTAINER_ENGINE_HOST); "" for a local one
    kind: EngineKind
    engine: EngineConfig  # its [docker] or [[engines]] table: a change needs a restart
    api: docker.APIClient
    queue: PendingQueue
    telemetry: Telemetry
    points: ResumePoints
    config: Callable[[], Config]  # the running config
