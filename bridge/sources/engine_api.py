"""The Engine API in one place: the client, what kind of engine answers, and what its errors mean.

Docker and Podman speak the same API; everything the sources need to know about talking to it
lives here, so that a reader, the discovery and the engine's start-up classify a failure the
same way:

- `TRANSIENT_ERRORS`: the connection or the stream failed; the same call may work later.
- `is_gone(exc)`: the engine answered that the container does not exist (any more), as a
  non-200 answer or as the error Podman writes in the body of a `200 OK` (`EngineErrorBody`);
  the readers turn that into `ContainerGone`, which ends them for good.
- `ENGINE_ERRORS`: anything an engine call may raise, for callers that only log and retry.
- `container_status`: the one question every reader asks, "is it still running?".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import docker
import docker.errors
import docker.tls
import docker.utils
import requests

from bridge.config import EngineConfig
from bridge.sources.api.frames import EngineErrorBody, StreamFormatError

EngineKind = Literal["docker", "podman"]

TRANSIENT_ERRORS = (
    requests.exceptions.RequestException,
    OSError,
    StreamFormatError,
)
# APIError is a DockerException: an answer the engine gave (4xx/5xx), gone or not.
ENGINE_ERRORS = (
    *TRANSIENT_ERRORS,
    docker.errors.DockerException,
)


class ContainerGone(Exception):
    """The container was removed: its logs cannot be read any more."""


# Podman answers 500 "... no such container" (or, once its own object of the container is
# marked removed, "container has already been removed") for a container removed meanwhile.
_PODMAN_GONE = ("no such container", "has already been removed")


def is_gone(exc: docker.errors.APIError | EngineErrorBody) -> bool:
    """The engine's answer means the container no longer exists."""
    if exc.status_code in (404, 409):
        return True
    explanation = str(exc.explanation or "").lower()
    return exc.status_code == 500 and any(s in explanation for s in _PODMAN_GONE)


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    """What the readers need of a container's `State`: running or not, and since when not."""

    running: bool
    finished_at: str = ""
    pid: int = 0

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> ContainerStatus:
        """From an inspect answer's `State` (an engine's answer: every value checked)."""
        pid = state.get("Pid")
        return cls(
            running=bool(state.get("Running")),
            finished_at=str(state.get("FinishedAt") or "")[:64],
            pid=pid if isinstance(pid, int) and pid > 0 else 0,
        )


RUNNING = ContainerStatus(running=True)


def container_status(api: docker.APIClient, container_id: str) -> ContainerStatus:
    """Asks the engine; raises `ContainerGone`, or what `ENGINE_ERRORS` lists."""
    try:
        data = api.inspect_container(container_id)
    except docker.errors.APIError as exc:
        if is_gone(exc):
            raise ContainerGone(container_id) from exc
        raise
    state = data.get("State") if isinstance(data, dict) else None
    return ContainerStatus.of(state if isinstance(state, dict) else {})


def engine_client(engine: EngineConfig) -> docker.APIClient:
    """A client for the engine: its host and TLS files, or DOCKER_HOST and friends."""
    kwargs: dict[str, Any] = docker.utils.kwargs_from_env() if not engine.host else {}
    if engine.host:
        kwargs["base_url"] = engine.host
    if engine.tls:
        cert = (engine.tls_cert_file, engine.tls_key_file) if engine.tls_cert_file else None
        verify: bool | str = engine.tls_verify
        if engine.tls_verify and engine.tls_ca_file:
            verify = engine.tls_ca_file
        kwargs["tls"] = docker.tls.TLSConfig(
            client_cert=cert, ca_cert=engine.tls_ca_file or None, verify=verify
        )
    # docker-py keeps a connection pool per request URL (so each reader's stream has its own)
    # and fills a new pool's queue up to max_pool_size, then drains it when the pool is
    # evicted: a large pool made every request and every attach slow (see bench/results.md).
    # A few connections per URL is all any URL needs. Podman speaks the same API at 1.41.
    client = docker.APIClient(version="1.41", timeout=30, max_pool_size=4, **kwargs)
    if engine.tls:
        # requests would let REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE win over the session's CA
        # (psf/requests#3829): the engine's own CA file is the one to trust.
        client.trust_env = False
    return client


def engine_kind(version: object) -> EngineKind:
    """Podman says so in /version's Components; anything else is taken for Docker."""
    components = version.get("Components") if isinstance(version, dict) else None
    for component in components if isinstance(components, list) else []:
        if isinstance(component, dict) and "podman" in str(component.get("Name", "")).lower():
            return "podman"
    return "docker"
