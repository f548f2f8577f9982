"""The benchmark's Twisted floor: the best any engine built under Courier's rules can reach.

Courier must listen with Twisted, must commit every message before its ACK, and must never
let the reactor thread wait on disk. This server does exactly that and nothing more: it
splits frames, hands each payload to one thread that inserts it into SQLite (WAL, the same
``synchronous`` setting as Courier's durability) and commits whatever queued meanwhile,
then answers a fixed ACK from the reactor thread. No parsing, checks, hashing, encryption
or ACK building. Usage: ``python floor_server.py PORT normal|full``.
"""

from __future__ import annotations

import queue
import sqlite3
import sys
import tempfile
import threading
from pathlib import Path

from twisted.internet import protocol, reactor

ACK = b"\x0bMSH|^~\\&|FLOOR||||20260101||ACK^R01^ACK|1|P|2.5\rMSA|AA|0\r\x1c\r"
END = b"\x1c\r"


class FloorProtocol(protocol.Protocol):
    def __init__(self, frames: queue.SimpleQueue) -> None:
        self._frames = frames
        self._chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)
        if b"\x1c" not in data and not data.startswith(b"\r"):
            return  # no frame can have ended in this read
        buffered = b"".join(self._chunks)
        self._chunks.clear()
        start = 0
        while (end := buffered.find(END, start)) >= 0:
            self._frames.put((buffered[start + 1 : end], self))
            start = end + 2
        if start < len(buffered):
            self._chunks.append(buffered[start:])


def commit_forever(path: Path, durability: str, frames: queue.SimpleQueue) -> None:
    """The writer thread: group commit, then ACK each frame from the reactor thread."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(f"PRAGMA synchronous = {durability}")
    db.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, raw BLOB)")
    while True:
        batch = [frames.get()]
        while True:
            try:
                batch.append(frames.get_nowait())
            except queue.Empty:
                break
        db.execute("BEGIN")
        db.executemany("INSERT INTO messages (raw) VALUES (?)", [(payload,) for payload, _ in batch])
        db.execute("COMMIT")
        reactor.callFromThread(_answer, [connection for _, connection in batch])


def _answer(connections: list[FloorProtocol]) -> None:
    for connection in connections:
        connection.transport.write(ACK)


class FloorFactory(protocol.ServerFactory):
    def __init__(self, frames: queue.SimpleQueue) -> None:
        self.frames = frames

    def buildProtocol(self, addr: object) -> FloorProtocol:
        return FloorProtocol(self.frames)


def main(port: int, durability: str) -> None:
    frames: queue.SimpleQueue = queue.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="courier-floor-") as workdir:
        path = Path(workdir) / "floor.sqlite3"
        threading.Thread(target=commit_forever, args=(path, durability, frames), daemon=True).start()
        reactor.listenTCP(port, FloorFactory(frames), interface="127.0.0.1")
        reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
