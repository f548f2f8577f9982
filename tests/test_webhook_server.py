"""The webhook server over real sockets: what it refuses, and that it refuses before reading.

A stranger's request is judged on its headers: an unknown path, a source outside
``allow_from``, a method other than POST, wrong credentials or a declared body over the limit
are answered at once, while the client is still sending, and the body is never read. Chunked
bodies are counted as they come; slow clients are cut off at absolute deadlines; connections
are limited.
"""

from __future__ import annotations

import base64
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator

import pytest
from twisted.web.resource import Resource

from courier_sandbox.certs import make_certificates
from engine.status import webhook_server
from engine.status.webhook_limits import ServerLimits
from engine.status.webhooks import BasicAuth, Route, networks
from engine.tls import TLSSettings
from tests.conftest import on_reactor

USER, SECRET = "vendor", "Vq8Lw2Xr5Tn9Kz3Pb7Md4C"
TOKEN = "Tk7Rm2Qx9Wv4Lp8Zn3Bc6H"
CREDENTIALS = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
MAX_BODY = 64 * 1024
HUGE = 300 * 1024 * 1024
FAST = ServerLimits(max_connections=4, header_timeout_s=1.0, body_timeout_s=1.0)


class Recording(Resource):
    """A webhook that keeps every body it is given."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render_POST(self, request) -> bytes:
        self.bodies.append(request.content.read())
        return b"OK\n"


@pytest.fixture
def serve(reactor) -> Iterator[Callable[..., tuple[int, Recording]]]:
    """``serve(limits, **route)``: one Basic-auth route ``hook`` and one token route
    ``token-hook`` on a fresh server; returns its port and the recording webhook."""
    ports = []

    def start(limits: ServerLimits = FAST, tls: TLSSettings | None = None, **route) -> tuple[int, Recording]:
        recording = Recording()
        routes = [
            Route("hook", recording, BasicAuth(USER, SECRET), max_body_bytes=MAX_BODY, **route),
            Route("a/token-hook", recording, token=TOKEN, max_body_bytes=MAX_BODY),
        ]
        port = on_reactor(webhook_server.listen, reactor, "tcp:0:interface=127.0.0.1", routes, tls, limits)
        ports.append(port)
        return port.getHost().port, recording

    yield start
    for port in ports:
        on_reactor(port.stopListening)


def exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` whole, then read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError, ssl.SSLError):
        pass
    return answer


def head(path: str, *headers: str, auth: bool = True) -> bytes:
    """A POST's request line and headers (with our credentials unless ``auth`` is False)."""
    lines = [f"POST /{path} HTTP/1.1", "Host: courier", *headers]
    if auth:
        lines.append(f"Authorization: {CREDENTIALS}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, body: bytes = b"{}", *headers: str, auth: bool = True) -> bytes:
    return head(path, f"Content-Length: {len(body)}", *headers, auth=auth) + body


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def rss_bytes() -> int:
    with open("/proc/self/status") as status_file:
        for line in status_file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def stream_until_answered(
    port: int, head: bytes, chunk: bytes, total: int, tls: ssl.SSLContext | None = None
) -> tuple[bytes, int, float]:
    """Send ``head``, then ``chunk`` after ``chunk`` up to ``total`` bytes, stopping as soon as
    the server answers or hangs up. Returns (answer, body bytes sent, seconds taken)."""
    started = time.monotonic()
    sent = 0
    plain = socket.create_connection(("127.0.0.1", port), timeout=10)
    with tls.wrap_socket(plain, server_hostname="localhost") if tls else plain as sock:
        sock.sendall(head)
        sock.setblocking(False)
        try:
            while sent < total:
                readable, writable, _ = select.select([sock], [sock], [], 10)
                if readable or not writable:
                    break
                sent += sock.send(chunk)
        except (BrokenPipeError, ConnectionResetError, BlockingIOError, ssl.SSLError):
            pass
        sock.setblocking(True)
        sock.settimeout(5)
        return read_answer(sock), sent, time.monotonic() - started


def test_only_post_is_served_and_head_gets_405_with_allow(serve):
    port, recording = serve()
    for method in ("HEAD", "GET", "PUT", "OPTIONS"):
        answer = exchange(port, f"{method} /hook HTTP/1.1\r\nHost: courier\r\n\r\n".encode())
        assert status(answer) == 405, method
        assert b"\r\nAllow: POST\r\n" in answer
    assert status(exchange(port, post("elsewhere"))) == 404
    assert status(exchange(port, post("hook", b'{"ok": 1}'))) == 200
    assert recording.bodies == [b'{"ok": 1}']


def test_wrong_or_missing_credentials_get_401_and_nothing_reaches_the_webhook(serve):
    port, recording = serve()
    wrong = "Basic " + base64.b64encode(f"{USER}:guess".encode()).decode()
    assert status(exchange(port, post("hook", auth=False))) == 401
    answer = exchange(port, post("hook", b"{}", f"Authorization: {wrong}", auth=False))
    assert status(answer) == 401 and b'WWW-Authenticate: Basic realm="courier-hook"' in answer
    assert status(exchange(port, post("a/token-hook", auth=False))) == 404  # no token, no route
    assert status(exchange(port, post(f"a/{TOKEN[:-1]}x/token-hook", auth=False))) == 404
    assert recording.bodies == []
    assert status(exchange(port, post(f"a/{TOKEN}/token-hook", b"t", auth=False))) == 200
    assert recording.bodies == [b"t"]


def test_allow_from_refuses_other_addresses_before_authentication(serve):
    port, recording = serve(allow_from=networks(("203.0.113.0/24", "2001:db8::/32")))
    assert status(exchange(port, post("hook"))) == 403
    assert recording.bodies == []
    port, recording = serve(allow_from=networks(("203.0.113.0/24", "127.0.0.0/8")))
    assert status(exchange(port, post("hook", auth=False))) == 401  # let in, then authenticated
    assert status(exchange(port, post("hook"))) == 200


def test_a_300_mb_unauthenticated_body_is_refused_before_it_is_read(serve):
    port, recording = serve()
    unauthenticated = head("hook", f"Content-Length: {HUGE}", auth=False)
    before = rss_bytes()
    answer, sent, seconds = stream_until_answered(port, unauthenticated, b"x" * 65536, HUGE)
    assert status(answer) == 401
    assert sent < 32 * 1024 * 1024, f"the server read {sent} bytes before answering"
    assert seconds < 5
    assert rss_bytes() - before < 5 * 1024 * 1024
    assert recording.bodies == []


def test_an_authenticated_body_over_the_route_limit_is_refused_on_its_content_length(serve):
    port, recording = serve()
    answer, sent, _ = stream_until_answered(port, head("hook", f"Content-Length: {HUGE}"), b"x" * 65536, HUGE)
    assert status(answer) == 413
    assert sent < 32 * 1024 * 1024
    assert recording.bodies == []


@pytest.mark.parametrize(("auth", "expected"), [(False, 401), (True, 413)])
def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_limit(serve, auth, expected):
    port, recording = serve()
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    before = rss_bytes()
    answer, sent, seconds = stream_until_answered(
        port, head("hook", "Transfer-Encoding: chunked", auth=auth), chunk, HUGE
    )
    assert status(answer) == expected
    assert sent < 32 * 1024 * 1024 and seconds < 5
    assert rss_bytes() - before < 5 * 1024 * 1024
    assert recording.bodies == []


def test_a_chunked_body_within_the_limit_is_served(serve):
    port, recording = serve()
    body = b"5\r\nhello\r\n0\r\n\r\n"
    assert status(exchange(port, head("hook", "Transfer-Encoding: chunked") + body)) == 200
    assert recording.bodies == [b"hello"]


def test_too_many_or_too_large_headers_are_refused(serve):
    port, recording = serve()
    many = [f"X-Filler-{n}: x" for n in range(FAST.max_headers + 1)]
    assert status(exchange(port, post("hook", b"{}", *many))) == 400
    large = [f"X-Large-{n}: {'y' * 6000}" for n in range(3)]  # 18 KB > 16 KiB
    assert status(exchange(port, post("hook", b"{}", *large))) == 400
    endless = head("hook", auth=False)[:-4] + b"\r\nX-Endless: " + b"z" * (FAST.max_header_bytes + 1)
    assert status(exchange(port, endless)) == 400  # one line, never finished
    smuggled = post("hook", b"0\r\n\r\n", "Transfer-Encoding: chunked", "X-After: 1")
    assert status(exchange(port, smuggled)) == 400  # two lengths: refused, the rest not read
    assert recording.bodies == []


def drip(port: int, first: bytes, drop: bytes, every_s: float = 0.2) -> tuple[bytes, float]:
    """Send ``first``, then ``drop`` every ``every_s`` until the server answers or hangs up."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(first)
        try:
            while time.monotonic() - started < 5:
                if select.select([sock], [], [], every_s)[0]:
                    break
                sock.sendall(drop)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_answer(sock), time.monotonic() - started


def test_slowly_dripped_headers_are_cut_off_at_the_deadline(serve):
    port, _ = serve()
    answer, seconds = drip(port, b"POST /hook HTTP/1.1\r\n", b"X-Drip: 1\r\n")
    assert status(answer) == 408
    assert 0.8 < seconds < 2.5


def test_a_slowly_dripped_body_is_cut_off_at_the_deadline(serve):
    port, recording = serve()
    answer, seconds = drip(port, head("hook", "Content-Length: 1000"), b"x")
    assert status(answer) == 408
    assert 0.8 < seconds < 2.5
    assert recording.bodies == []


def test_connections_over_the_limit_get_503_until_one_closes(serve):
    port, recording = serve(ServerLimits(max_connections=2, header_timeout_s=10.0))
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    second = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        answer = exchange(port, post("hook"))
        assert status(answer) == 503
        assert recording.bodies == []
    finally:
        first.close()
    time.sleep(0.2)
    assert status(exchange(port, post("hook", b"[]"))) == 200
    second.close()
    assert recording.bodies == [b"[]"]


def test_a_keep_alive_connection_serves_requests_one_after_another(serve):
    port, recording = serve()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for n in range(3):
            sock.sendall(post("hook", str(n).encode()))
            answer = sock.recv(65536)
            assert status(answer) == 200
        time.sleep(FAST.header_timeout_s + 0.5)  # idle between requests: the header deadline
        assert status(read_answer(sock)) == 408
    assert recording.bodies == [b"0", b"1", b"2"]


def test_over_tls_a_huge_unauthenticated_body_is_refused_just_as_fast(serve, tmp_path):
    certs = make_certificates(tmp_path / "certs")
    port, recording = serve(tls=TLSSettings(certs.server_cert, certs.server_key))
    client = ssl.create_default_context(cafile=str(certs.ca_cert))
    unauthenticated = head("hook", f"Content-Length: {HUGE}", auth=False)
    answer, sent, seconds = stream_until_answered(port, unauthenticated, b"x" * 65536, HUGE, client)
    assert status(answer) == 401
    assert sent < 32 * 1024 * 1024 and seconds < 5
    answer, _, _ = stream_until_answered(
        port, b"HEAD /hook HTTP/1.1\r\nHost: courier\r\n\r\n", b"", 0, client
    )
    assert status(answer) == 405
    assert recording.bodies == []


def test_pipelined_requests_are_answered_in_order(serve):
    port, recording = serve()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(post("hook", b"first") + post("hook", b"second"))
        answers = b""
        while answers.count(b"HTTP/1.1 200") < 2:
            answers += sock.recv(65536)
    assert recording.bodies == [b"first", b"second"]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("203.0.113.9", True),
        ("::ffff:203.0.113.9", True),  # an IPv4 peer on a dual-stack socket
        ("2001:db8::1%eth0", True),
        ("198.51.100.1", False),
        ("2001:db9::1", False),
        ("not an address", False),
    ],
)
def test_allow_from_reads_ipv4_ipv6_and_mapped_addresses(host, allowed):
    assert webhook_server.address_in(host, networks(("203.0.113.0/24", "2001:db8::/32"))) is allowed
