"""Helpers the sandbox tests share (no tests here): a fake clock, serving, a webhook receiver."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twisted.internet.task import Clock

from courier_sandbox.base import VendorSandbox
from courier_sandbox.credentials import Credentials
from tests.conftest import on_reactor

TEST_CREDENTIALS = Credentials(
    qliq_api_key="test-qliq-key",
    conneqt_api_key="test-conneqt-key",
    conneqt_unauthorised_api_key="test-conneqt-unauthorised",
    conneqt_access_code="TEST-ACCESS",
    medallies_password="test-medallies-password",
    medallies_readonly_password="test-readonly-password",
    medallies_webhook_secret="test-inbound-secret",
    kpn_client_secret="test-kpn-secret",
    http_signing_secret="test-http-signing-secret",
    http_token="test-http-token",
    http_password="test-http-password",
    http_api_key="test-http-api-key",
)
"""What the tests' sandboxes accept: fixed, so a test can name them; never used at run time."""


def fake_clock() -> Clock:
    """A clock the test advances by hand, starting at the real time (expiry dates need it)."""
    clock = Clock()
    clock.advance(time.time())
    return clock


def serve(sandbox: VendorSandbox) -> Iterator[VendorSandbox]:
    """Body of a module-scoped fixture: listen on a free port, stop afterwards."""
    on_reactor(sandbox.listen)
    yield sandbox
    on_reactor(sandbox.stop)


def fresh(sandbox: VendorSandbox) -> VendorSandbox:
    """Reset a shared sandbox before a test."""
    on_reactor(sandbox.reset)
    return sandbox


class Receiver:
    """A small webhook endpoint on 127.0.0.1 that queues (path, headers, body) of each POST."""

    def __init__(self, status: int = 200) -> None:
        self.posts: queue.Queue = queue.Queue()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.put((self.path, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def next(self, timeout: float = 5):
        return self.posts.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
