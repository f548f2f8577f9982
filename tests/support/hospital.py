"""The hospital's side of the status reports: an MLLP listener that ACKs like a well-behaved
engine and keeps every HL7 message it gets, in arrival order."""

from __future__ import annotations

import queue

from engine.listener import AcknowledgingReceiver
from engine.message import Message
from engine.mllp.server import MLLPServerFactory
from tests.conftest import on_reactor
from tests.support.waiting import wait_for


class Hospital:
    """The sending system's listener, on ``port`` (or a free one) once :meth:`up`.

    ``messages`` and :meth:`about` read everything received so far; :meth:`next` takes the
    messages one at a time. ``receiver`` replaces the well-behaved one (a broken peer).
    """

    def __init__(self, reactor, port: int = 0, receiver=None) -> None:
        self.reactor = reactor
        self.messages: list[Message] = []
        self._arrivals: queue.Queue[Message] = queue.Queue()
        self.receiver = receiver or AcknowledgingReceiver(reactor, self._received)
        self.port = port
        self._listening = None

    def _received(self, message: Message) -> None:
        self.messages.append(message)
        self._arrivals.put(message)

    def up(self) -> Hospital:
        factory = MLLPServerFactory("hospital", self.receiver, self.reactor)
        self._listening = on_reactor(self.reactor.listenTCP, self.port, factory, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self

    def down(self) -> None:
        on_reactor(self._listening.stopListening)

    def next(self, timeout: float = 5.0) -> Message:
        """The next message not yet taken, waiting for it up to ``timeout``."""
        return self._arrivals.get(timeout=timeout)

    def nothing_more(self, wait: float = 0.5) -> bool:
        try:
            self._arrivals.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def about(self, control_id: str) -> list[Message]:
        """The messages answering ``control_id`` (their MSA-2), in arrival order."""
        return [
            m for m in list(self.messages) if m.segment("MSA") and m.segment("MSA").value(2) == control_id
        ]

    def wait_about(self, control_id: str, count: int, timeout: float = 10.0) -> list[Message]:
        return wait_for(
            lambda: len(self.about(control_id)) >= count and self.about(control_id),
            timeout,
            f"{count} messages about {control_id} at the hospital",
        )
