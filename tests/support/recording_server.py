"""A plain recording HTTP server: what Courier really sends, with no reading of any document.

It records every request (method, target, headers, body) and answers with a canned response,
by default the one the test gave it (taken from a vendor document's example answer). It also
works as an HTTP proxy: a client told to use it as proxy for ``http://`` URLs sends the
absolute URL, so a test can point Courier at a vendor's own documented host name and still
see every request here; ``CONNECT`` (an ``https://`` URL through the proxy) is recorded with
its authority and refused, since nothing behind it can be seen.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived."""

    method: str
    target: str  # the request line's target: a path, an absolute URL, or host:port for CONNECT
    headers: dict[str, str]  # names as sent; a repeated header keeps its last value
    body: bytes

    @property
    def tunnelled(self) -> bool:
        """An https request through the proxy: only the authority is known."""
        return self.method == "CONNECT"

    @property
    def authority(self) -> str:
        if self.tunnelled:
            return self.target
        return urlsplit(self.target).netloc or self.header("Host") or ""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class Canned:
    """An answer: status, JSON or raw body, extra headers."""

    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes/str sent as they are
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        if isinstance(self.body, bytes):
            return self.body, dict(self.headers)
        if isinstance(self.body, str):
            return self.body.encode(), {"Content-Type": "text/plain", **self.headers}
        if self.body is None:
            return b"", dict(self.headers)
        return json.dumps(self.body).encode(), {"Content-Type": "application/json", **self.headers}


Responder = Callable[[Recorded], Canned]


class RecordingServer:
    """Listens on 127.0.0.1 on a free port in a thread of its own; use as a context manager."""

    def __init__(self, answer: Canned | Responder | None = None) -> None:
        self.requests: list[Recorded] = []
        self.respond: Responder = lambda _: Canned()
        if answer is not None:
            self.answer(answer)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name="recorder")

    def answer(self, answer: Canned | Responder) -> None:
        """Answer every following request with ``answer`` (or what the callable returns)."""
        self.respond = answer if callable(answer) else (lambda _: answer)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(self.command, self.path, dict(self.headers.items()), body)
                server.requests.append(recorded)
                if recorded.tunnelled:
                    canned = Canned(502, "recording server: no tunnel")
                    self.close_connection = True
                else:
                    canned = server.respond(recorded)
                payload, headers = canned.encoded()
                self.send_response(canned.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_CONNECT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
