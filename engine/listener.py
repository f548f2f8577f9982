"""A receiver that keeps nothing: it hands each message to a callback and ACKs it.

``courier listen`` prints with it, and the tests use it as the hospital's side of the
status messages Courier sends back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from engine.errors import MessageError
from engine.message import Message
from engine.message.ack import (
    ACCEPT,
    REJECT,
    AckError,
    ack_wanted,
    build_ack,
    build_unreadable_nak,
    is_enhanced_mode,
    readable_for_nak,
)
from engine.message.display import printable
from engine.mllp.server import Reply
from engine.source import INTERNAL_ERROR, NOT_HL7, ControlIds

log = logging.getLogger(__name__)


class AcknowledgingReceiver:
    """ACK every readable message (never an ACK, unless MSH-15 asks for a commit ACK)."""

    def __init__(self, clock: IReactorTime, on_message: Callable[[Message], None]) -> None:
        self.clock = clock
        self.on_message = on_message
        self.control_ids = ControlIds("L")

    def handle_frame(self, payload: bytes, peer: str) -> defer.Deferred[Reply]:
        try:
            message = Message.parse(payload, default_charset="latin-1")
        except MessageError as error:  # answered, so the sender does not wait for its timeout
            log.error("listener: %s: refused a frame that is not HL7: %s", peer, error)
            return defer.succeed(Reply(self._unreadable(NOT_HL7), committed=False))
        self.on_message(message)
        return defer.succeed(Reply(self._ack(message, ACCEPT)))

    def refuse_failed(self, payload: bytes, peer: str) -> bytes | None:
        message = readable_for_nak(payload)
        if message is None:
            return self._unreadable(INTERNAL_ERROR)
        return self._ack(message, REJECT, INTERNAL_ERROR)

    def _ack(self, message: Message, outcome: str, error: AckError | None = None) -> bytes | None:
        enhanced = is_enhanced_mode(message)
        if not ack_wanted(message, outcome, enhanced=enhanced):
            return None
        errors = () if error is None else (error,)
        return build_ack(
            message,
            outcome,
            control_id=self.control_ids(),
            timestamp=self._now(),
            errors=errors,
            enhanced=enhanced,
        )

    def _unreadable(self, error: AckError) -> bytes:
        return build_unreadable_nak(control_id=self.control_ids(), timestamp=self._now(), error=error)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), UTC)

    def refuse_oversize(self, head: bytes, peer: str) -> bytes | None:
        return None


class PrintingReceiver(AcknowledgingReceiver):
    """Print each message (or one summary line) as it arrives."""

    def __init__(self, clock: IReactorTime, out: TextIO, summary: bool = False) -> None:
        super().__init__(clock, self._print)
        self.out = out
        self.summary = summary

    def _print(self, message: Message) -> None:
        if self.summary:
            msa, zds = message.segment("MSA"), message.segment("ZDS")
            status = f" MSA {msa.value(1)} {msa.value(2)}" if msa else ""
            status += f" {zds.value(1)}" if zds else ""  # Courier's status event: delivered, read…
            kind = f"{message.message_type}^{message.trigger_event}"
            print(f"{kind} {printable(message.control_id)}{status}", file=self.out, flush=True)
        else:
            print(message.text.replace("\r", "\n"), file=self.out, flush=True)
