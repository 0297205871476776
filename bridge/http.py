"""The HTTP endpoints: /metrics, /healthz, /readyz."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

# Returns None when ready, else a one-line reason.
Readiness = Callable[[], str | None]


class StatusServer:
    def __init__(
        self, address: tuple[str, int], registry: CollectorRegistry, readiness: Readiness
    ) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._registry = registry
        self._readiness = readiness
        self._httpd = ThreadingHTTPServer(address, Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            self._reply(request, 200, encoder(self._registry), content_type)
        elif path == "/healthz":
            self._reply(request, 200, b"ok\n")
        elif path == "/readyz":
            reason = self._readiness()
            if reason is None:
                self._reply(request, 200, b"ready\n")
            else:
                self._reply(request, 503, f"not ready: {reason}\n".encode())
        else:
            self._reply(request, 404, b"not found\n")

    @staticmethod
    def _reply(
        request: BaseHTTPRequestHandler,
        code: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        request.send_response(code)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
