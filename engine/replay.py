"""Replaying HL7 messages over MLLP: read files, send over N connections, check each ACK.

Shared by ``courier send`` and the tests; a result is "accepted" only when the ACK's MSA-1
is AA or CA *and* its MSA-2 is the control id of the message it answers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from engine.errors import MessageError
from engine.message import Message
from engine.message.batch import split_file
from engine.mllp.client import ConnectionLost, MLLPClientProtocol, connect


@dataclass(frozen=True)
class Outgoing:
    """One message to send and where it came from."""

    payload: bytes
    origin: str
    control_id: str


@dataclass(frozen=True)
class Result:
    message: Outgoing
    ack_code: str = ""
    ack_control_id: str = ""
    error: str = ""
    latency_s: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.ack_code in ("AA", "CA") and self.ack_control_id == self.message.control_id

    def describe(self) -> str:
        what = f"{self.message.origin} (control id {self.message.control_id!r})"
        if self.error:
            return f"{what}: {self.error}"
        if self.ack_control_id != self.message.control_id:
            return f"{what}: ACK's MSA-2 is {self.ack_control_id!r}, not the message's control id"
        return f"{what}: {self.ack_code}"


@dataclass
class Summary:
    results: list[Result] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if not r.accepted]

    def describe(self) -> str:
        n = len(self.results)
        rate = n / self.elapsed_s if self.elapsed_s else 0.0
        return (
            f"{n} sent, {n - len(self.failures)} accepted, {len(self.failures)} not accepted "
            f"in {self.elapsed_s:.2f}s ({rate:.0f} msgs/s)"
        )


@dataclass
class Inputs:
    """What the files given to ``courier send`` hold: the messages, and one line per file that
    could not be read or holds no HL7 (those files are skipped, the others still sent)."""

    messages: list[Outgoing] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_messages(inputs: Iterable[str], stdin: BinaryIO = sys.stdin.buffer) -> Inputs:
    """Messages from files, directories (sorted, recursively) and ``-`` (stdin)."""
    found = Inputs()
    for name in inputs:
        if name == "-":
            _read_into(found, "<stdin>", stdin.read)
            continue
        path = Path(name)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            _read_into(found, str(file), file.read_bytes)
    return found


def _read_into(found: Inputs, origin: str, read: Callable[[], bytes]) -> None:
    try:
        messages = list(_messages_in(read(), origin))
    except OSError as error:
        found.problems.append(f"{origin}: cannot read it: {error.strerror or error}")
    except MessageError as error:
        found.problems.append(f"{origin}: not HL7: {error}")
    else:
        if messages:
            found.messages.extend(messages)
        else:
            found.problems.append(f"{origin}: not HL7: no MSH segment")


def _messages_in(data: bytes, origin: str) -> Iterator[Outgoing]:
    for number, payload in enumerate(split_file(data), 1):
        try:
            control_id = Message.parse(payload, default_charset="latin-1").control_id
        except MessageError:
            control_id = ""
        yield Outgoing(payload, f"{origin}#{number}", control_id)


class Replay:
    """Send messages over ``connections`` MLLP connections, at most ``rate`` per second."""

    def __init__(
        self,
        reactor: IReactorTime,
        endpoint: str,
        *,
        connections: int = 1,
        rate: float = 0.0,
        timeout: float = 30.0,
    ) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.connections = max(1, connections)
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.timeout = timeout
        self._next_slot = 0.0

    @defer.inlineCallbacks
    def run(
        self, messages: list[Outgoing], on_result: Callable[[Result], None] | None = None
    ) -> Iterator[defer.Deferred]:
        summary = Summary()
        queue = iter(messages)
        started = time.perf_counter()
        self._next_slot = self.reactor.seconds()
        workers = [self._worker(queue, summary, on_result) for _ in range(self.connections)]
        yield defer.gatherResults(workers, consumeErrors=True)
        summary.elapsed_s = time.perf_counter() - started
        order = {id(m): i for i, m in enumerate(messages)}
        summary.results.sort(key=lambda r: order[id(r.message)])
        return summary

    @defer.inlineCallbacks
    def _worker(
        self, queue: Iterator[Outgoing], summary: Summary, on_result: Callable[[Result], None] | None
    ) -> Iterator[defer.Deferred]:
        connection = _Connection(self.reactor, self.endpoint, self.timeout)
        for message in queue:
            yield self._wait_for_slot()
            sent_at = time.perf_counter()
            try:
                reply = yield connection.exchange(message.payload)
                result = _read_ack(message, reply, time.perf_counter() - sent_at)
            except Exception as error:
                result = Result(message, error=str(error) or type(error).__name__)
            summary.results.append(result)
            if on_result:
                on_result(result)
        yield connection.close()

    def _wait_for_slot(self) -> defer.Deferred[None]:
        if not self.interval:
            return defer.succeed(None)
        now = self.reactor.seconds()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self.interval
        return task.deferLater(self.reactor, slot - now, lambda: None)


class _Connection:
    """One worker's MLLP connection, opened when needed and again after the server closed it:
    some servers (hl7apy's) close after every answer."""

    def __init__(self, reactor: IReactorTime, endpoint: str, timeout: float) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.timeout = timeout
        self._client: MLLPClientProtocol | None = None
        self._answered = False  # the open connection has carried an exchange

    @defer.inlineCallbacks
    def exchange(self, payload: bytes) -> Iterator[defer.Deferred]:
        """The reply to ``payload``. A connection that has answered before and is lost before
        this reply is one the server closed after its last answer (its close and our send
        crossed): the message goes once more on a new connection. A receiver takes a resent
        message as HL7 intends: duplicates are its to detect (by MSH-10)."""
        for attempt in (1, 2):
            reused = yield self._open()
            try:
                reply = yield self._client.send(payload, timeout=self.timeout)
            except ConnectionLost:
                self.close()
                if reused and attempt == 1:
                    continue
                raise
            except Exception:
                self.close()  # a late reply must never be read as the next message's
                raise
            self._answered = True
            return reply

    @defer.inlineCallbacks
    def _open(self) -> Iterator[defer.Deferred]:
        """Whether the connection the next send goes on has carried an exchange before."""
        if self._client is not None and self._client.is_open:
            return self._answered
        try:
            self._client = yield connect(self.reactor, self.endpoint, timeout=self.timeout)
        except Exception as error:
            raise ConnectionError(f"cannot connect: {error}") from error
        self._answered = False
        return False

    def close(self) -> defer.Deferred[None]:
        client, self._client = self._client, None
        return client.close() if client is not None else defer.succeed(None)


def _read_ack(message: Outgoing, reply: bytes, latency_s: float) -> Result:
    try:
        ack = Message.parse(reply, default_charset="latin-1")
    except MessageError as error:
        return Result(message, error=f"reply is not HL7: {error}", latency_s=latency_s)
    msa = ack.segment("MSA")
    if msa is None:
        return Result(message, error="reply has no MSA segment", latency_s=latency_s)
    code, control_id = msa.value(1), msa.value(2)
    error = ""
    if code not in ("AA", "CA"):
        err = ack.segment("ERR")
        detail = (err.value(8) or err.value(3, component=2) or err.value(1)) if err else msa.value(3)
        error = f"{code} {detail}".strip()
    return Result(message, code, control_id, error, latency_s)
