"""Blocking MLLP helpers for tests: a plain socket client and a listener started on the reactor."""

from __future__ import annotations

import socket
import ssl
import time

from engine.mllp.framing import Frame, Framer, frame


class BlockingClient:
    """An MLLP client on a plain socket, so tests control every byte they send."""

    def __init__(
        self, port: int, *, host: str = "127.0.0.1", timeout: float = 5.0, tls: ssl.SSLContext | None = None
    ):
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = tls.wrap_socket(raw, server_hostname="localhost") if tls else raw
        self.sock.settimeout(timeout)
        self._framer = Framer(64 * 1024 * 1024)
        self._frames: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def receive(self) -> bytes:
        """The next reply frame's payload; raises TimeoutError or ConnectionError."""
        while not self._frames:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the server")
            self._frames.extend(e.payload for e in self._framer.feed(data) if isinstance(e, Frame))
        return self._frames.pop(0)

    def request(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.receive()

    def is_closed_by_peer(self, wait: float = 2.0) -> bool:
        """True if the server closes the connection within ``wait`` seconds."""
        self.sock.settimeout(wait)
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
