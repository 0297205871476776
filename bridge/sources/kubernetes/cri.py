"""A client of the container runtime's CRI socket (runtime.v1 over gRPC): what the bridge asks.

The runtime (containerd, CRI-O) answers node-locally, without API-server or kubelet
credentials: a container's ID, image, labels and annotations, and its pod's labels and
annotations (kubelet copies every pod label and annotation onto the sandbox). Messages are the
hand-written subset in cri_api.proto; the generated cri_api_pb2 is checked in (see
scripts/gen-cri.sh), so installing the bridge needs no protobuf compiler.

Invariants: every call has a deadline (a hung runtime never holds a reader); errors are
`CriError` with one line; the channel reconnects by itself (gRPC), so a runtime restarted
behind the same socket path is used again without a new client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from bridge.sources.kubernetes import cri_api_pb2 as pb

_SERVICE = "/runtime.v1.RuntimeService/"
_TIMEOUT_SECONDS = 2.0
# A runtime's answer is small; a hostile or broken one must not grow without bound.
_MAX_MESSAGE_BYTES = 16 << 20

R = TypeVar("R", bound=Message)


class CriError(Exception):
    """A call failed (socket gone, runtime down, container unknown); str() is one line."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def not_found(self) -> bool:
        return self.code == grpc.StatusCode.NOT_FOUND


class CriClient:
    """One channel to `socket` (a path: unix://<path>); thread-safe, like the gRPC channel."""

    def __init__(self, socket: str, timeout: float = _TIMEOUT_SECONDS) -> None:
        self.socket = socket
        self._timeout = timeout
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._calls: dict[str, Callable[..., Any]] = {}

    def close(self) -> None:
        with self._lock:
            channel, self._channel = self._channel, None
            self._calls = {}
        if channel is not None:
            channel.close()

    # --- what the bridge asks -------------------------------------------------------------

    def version(self) -> pb.VersionResponse:
        return self.call("Version", pb.VersionRequest(version="v1"), pb.VersionResponse)

    def container_status(self, container_id: str) -> pb.ContainerStatus:
        request = pb.ContainerStatusRequest(container_id=container_id)
        return self.call("ContainerStatus", request, pb.ContainerStatusResponse).status

    def pod_status(self, sandbox_id: str) -> pb.PodSandboxStatus:
        request = pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)
        return self.call("PodSandboxStatus", request, pb.PodSandboxStatusResponse).status

    def containers(self, labels: dict[str, str] | None = None) -> list[pb.Container]:
        request = pb.ListContainersRequest(filter=pb.ContainerFilter(label_selector=labels or {}))
        return list(self.call("ListContainers", request, pb.ListContainersResponse).containers)

    # --- any call -------------------------------------------------------------------------

    def call(self, method: str, request: Message, response: type[R], timeout: float = 0) -> R:
        """One unary call of the runtime service. Raises CriError."""
        stub = self._stub(method, response)
        try:
            result: R = stub(request, timeout=timeout or self._timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            text = " ".join(str(details or "").split())[:200]
            raise CriError(f"{method}: {code.name if code else 'error'}: {text}", code) from None
        return result

    def _stub(self, method: str, response: type[Message]) -> Callable[..., Any]:
        with self._lock:
            if self._channel is None:
                self._channel = grpc.insecure_channel(
                    f"unix://{self.socket}",
                    options=[
                        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                        ("grpc.enable_http_proxy", 0),
                    ],
                )
            stub = self._calls.get(method)
            if stub is None:
                stub = self._channel.unary_unary(
                    _SERVICE + method,
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=response.FromString,
                )
                self._calls[method] = stub
            return stub
