"""A real HTTP(S) server on 127.0.0.1 that plays back scripted answers and records requests.

A stand-in for any vendor or receiving system: each request gets the next scripted
:class:`Reply` (fault injection: any status, headers, body or delay), or 200 ``{}`` when none
is left, and is kept as a :class:`Received`. It tests what no sandbox produces on demand, and
captures what Courier really sends.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON, str/bytes → as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # when the whole request had arrived

    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedServer:
    """Plays back :class:`Reply` objects in order; HTTPS when given a certificate and key."""

    def __init__(self, cert: Path | None = None, key: Path | None = None) -> None:
        self.replies: list[Reply] = []
        self.received: list[Received] = []
        self.connections = 0  # TCP connections accepted (keep-alive reuses one for many requests)
        self.in_flight = self.most_in_flight = 0  # requests being answered now, and the most at once
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.connections += 1

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with server._lock:
                    server.received.append(
                        Received(self.command, self.path, dict(self.headers.items()), body)
                    )
                    reply = server.replies.pop(0) if server.replies else Reply(200, {})
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                time.sleep(reply.delay_s)
                with server._lock:
                    server.in_flight -= 1
                payload = reply.body
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload)
                data = payload.encode() if isinstance(payload, str) else payload or b""
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.scheme = "http"
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
