"""The HTTP endpoints: /metrics, /healthz, /readyz.

Served by httpio.BoundedServer, whose module docstring states the bounds: a fixed set of
threads and of connections whatever the clients do, a deadline for the request head (TLS
handshake included) and one for the reply; one request per connection. GET and HEAD only.

TLS and basic auth (MetricsConfig.tls_*, basic_auth_*) are off by default. With basic auth,
every path but /healthz needs the credentials (401 otherwise): a liveness probe needs no secret,
and /healthz says nothing but "ok"; /readyz names what is wrong, so it stays behind the auth.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from bridge.service.httpio import BoundedServer, Limits, Request, phrase, reply

if TYPE_CHECKING:
    from bridge.config import MetricsConfig

__all__ = ["Limits", "Readiness", "StatusServer", "tls_context"]

# Returns None when ready, else a one-line reason.
Readiness = Callable[[], str | None]

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="journald-bridge", charset="UTF-8"'}


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


class StatusServer:
    """Binds at construction (so `port` is known), serves after start(); stop() closes all.

    `basic_auth` is (user, password). The render workers call `readiness` and collect the
    registry, so both must return promptly.
    """

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        readiness: Readiness,
        *,
        tls: ssl.SSLContext | None = None,
        basic_auth: tuple[str, str] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._registry = registry
        self._readiness = readiness
        self._auth = None
        if basic_auth is not None:
            self._auth = (_digest(basic_auth[0].encode()), _digest(basic_auth[1].encode()))
        self._server = BoundedServer(address, self._respond, tls, limits)

    @classmethod
    def from_config(
        cls, config: MetricsConfig, registry: CollectorRegistry, readiness: Readiness
    ) -> StatusServer:
        tls = None
        if config.tls_cert_file:
            tls = tls_context(config.tls_cert_file, config.tls_key_file)
        user = config.basic_auth_user
        auth = (user, config.basic_auth_password()) if user else None
        return cls(config.address, registry, readiness, tls=tls, basic_auth=auth)

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def _respond(self, request: Request) -> bytes:
        if request.method not in ("GET", "HEAD"):
            return reply(405, phrase(405), headers={"Allow": "GET, HEAD"})
        answer = functools.partial(reply, head_only=request.method == "HEAD")
        if request.path == "/healthz":
            return answer(200, b"ok\n")
        if not self._authorized(request.headers.get("authorization", "")):
            return answer(401, phrase(401), headers=_CHALLENGE)
        if request.path == "/metrics":
            encoder, content_type = choose_encoder(request.headers.get("accept", ""))
            return answer(200, encoder(self._registry), content_type)
        if request.path == "/readyz":
            reason = self._readiness()
            if reason is None:
                return answer(200, b"ready\n")
            return answer(503, f"not ready: {reason}\n".encode())
        return answer(404, phrase(404))

    def _authorized(self, header: str) -> bool:
        if self._auth is None:
            return True
        scheme, _, token = header.partition(" ")
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # Digests, both compared every time: the time taken tells neither the lengths nor
        # which of the two was wrong.
        user_ok = hmac.compare_digest(_digest(user), self._auth[0])
        password_ok = hmac.compare_digest(_digest(password), self._auth[1])
        return scheme.lower() == "basic" and bool(sep) and user_ok and password_ok


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
