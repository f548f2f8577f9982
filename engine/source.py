"""A channel's source: frame → message → checks → durable store → ACK.

This is where "nothing lost" is decided. The ACK (AA/CA) is built only after the store has
committed the message; every refusal is an HL7 NAK with an ERR segment that says why; an
inbound ACK is recorded and never answered. The full table is in the README ("ACKs").

The checks (accept filter, optional hl7apy validation, every destination's mapping dry-run)
run before the store and are supplied by the caller as one function, so this module stays
about the order of events and the ACK, not about channel configuration.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

from prometheus_client import Histogram
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from engine.errors import MessageError
from engine.logs import context_log, loggable_error
from engine.message import Message
from engine.message.ack import (
    ACCEPT,
    ERROR,
    REJECT,
    AckError,
    ack_wanted,
    build_ack,
    build_batch_ack,
    build_unreadable_nak,
    is_enhanced_mode,
    readable_for_nak,
)
from engine.message.batch import Batch, split_batch
from engine.message.display import printable
from engine.message.path import Path
from engine.message.structure import structure_problem
from engine.metrics import ChannelMetrics, Metrics
from engine.mllp.server import Reply
from engine.store.base import FILTERED, Incoming, Receipt, Store

log = logging.getLogger(__name__)

AckMode = Literal["auto", "original", "enhanced"]
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Accepted:
    """The checks passed: store the message with these deliveries."""

    destinations: tuple[str, ...]
    state: str = "RECEIVED"
    """``RECEIVED``, or ``FILTERED`` when a condition filtered it out (stored, ACKed, not sent)."""
    order_keys: tuple[tuple[str, str], ...] = ()
    """(destination, key) for each destination with an ``order_by`` (the key is PHI)."""


class Refused(Exception):
    """The checks refused the message: answer AR/CR (or AE/CE) with this ERR."""

    def __init__(self, error: AckError, outcome: str = REJECT) -> None:
        super().__init__(error.text)
        self.error = error
        self.outcome = outcome


Check = Callable[[Message], "Accepted | defer.Deferred[Accepted]"]
"""Runs before the store; returns :class:`Accepted` or raises :class:`Refused`."""


NOT_HL7 = AckError(
    100, "Frame content is not an HL7 v2 message: it does not start with a readable MSH segment"
)
STORE_FAILED = AckError(207, "Message could not be stored; it was not accepted, please resend later")
INTERNAL_ERROR = AckError(207, "Internal error while handling the message; it was not accepted")
DUPLICATE = AckError(205, "Duplicate message: this control id and content were already received")
TOO_LARGE = AckError(207, "Message exceeds the listener's maximum size and was refused")
CHARSET_FIELD = Path.parse("MSH-18")


class ControlIds:
    """Fresh MSH-10 values for the messages we send: unique, short (≤ 20 characters).

    Several generators run at once (each channel's ACKs, the status reporter, inbound
    documents) and all may talk to the same hospital, whose engine may drop a repeated MSH-10
    as a duplicate. So each generator's prefix is its start time *and* a random part: two
    generators never share a sequence, not even when started in the same second.
    """

    def __init__(self, prefix: str | None = None) -> None:
        self._given_prefix = prefix
        self._start_sequence()

    def _start_sequence(self) -> None:
        self._prefix = (self._given_prefix or format(int(time.time()), "x")) + secrets.token_hex(2)
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        number = next(self._counter)
        if number > 9_999_999:  # seven digits used up: a new sequence keeps ids at 20 characters
            self._start_sequence()
            number = next(self._counter)
        return f"C{self._prefix}{number:07d}"


class Source:
    """Handles one channel's frames (an :class:`engine.mllp.server.FrameHandler`)."""

    def __init__(
        self,
        channel: str,
        store: Store,
        clock: IReactorTime,
        check: Check,
        *,
        charset: str = "ascii",
        force_charset: bool = False,
        strict_charset: bool = False,
        ack_mode: AckMode = "auto",
        reject_duplicates: bool = False,
        duplicate_window_s: float | None = None,
        on_queued: Callable[[tuple[str, ...]], None] | None = None,
        metrics: ChannelMetrics | None = None,
    ) -> None:
        self.channel = channel
        self.store = store
        self.clock = clock
        self.check = check
        self.charset = charset
        self.force_charset = force_charset
        self.strict_charset = strict_charset
        self.ack_mode = ack_mode
        self.reject_duplicates = reject_duplicates
        self.duplicate_window_s = duplicate_window_s
        self.control_ids = ControlIds()
        self.on_queued = on_queued
        """Told which destinations got new deliveries, after the commit (wakes their queues)."""
        self.metrics = metrics or Metrics().channel(channel)
        """What this channel counts (by default on a registry of its own, which nobody reads)."""
        self.log = context_log(log, channel=channel)
        self._second = -1
        self._second_as_time = datetime.fromtimestamp(0, UTC)

    # FrameHandler

    def handle_frame(self, payload: bytes, peer: str) -> defer.Deferred[Reply]:
        started = self.metrics.timer()
        d = self._handle_frame(payload, peer)
        return d.addBoth(self._observe, self.metrics.ack_latency, started)

    def _handle_frame(self, payload: bytes, peer: str) -> defer.Deferred[Reply]:
        try:
            batch = split_batch(payload)
            if batch is not None:
                return self._handle_batch(batch, peer)
            message = self._parse(payload)
        except MessageError as error:
            self.log.error("channel %s: %s: refused a frame that is not HL7: %s", self.channel, peer, error)
            self.metrics.received.inc()
            return defer.succeed(self._reply(UNREADABLE, None))
        if message.message_type == "ACK":
            return self._record_ack(message, payload, peer)
        self.metrics.received.inc()
        verdict = self._screen(message)
        if isinstance(verdict, defer.Deferred):
            d = verdict.addCallback(self._store, message, payload, peer)
        else:
            d = self._store(verdict, message, payload, peer)
        return d.addCallback(self._reply, message)

    def refuse_oversize(self, head: bytes, peer: str) -> bytes | None:
        self.metrics.received.inc()
        self.metrics.refused(TOO_LARGE.code)
        try:
            message = self._parse(head)
        except MessageError:
            return None
        return self._answer(message, _Answer(REJECT, TOO_LARGE, committed=False))

    def refuse_failed(self, payload: bytes, peer: str) -> bytes | None:
        """AR/CR 207 with MSA-2 = the frame's MSH-10 (:func:`readable_for_nak`): the frame's one
        refusal counted, as nothing of it was answered (an inbound ACK is counted in neither)."""
        message = readable_for_nak(payload)
        inbound_ack = message is not None and message.message_type == "ACK"
        return self._reply(FAILED, message, counted=not inbound_ack).payload

    # Steps

    def _parse(self, payload: bytes) -> Message:
        message = Message.parse(payload, default_charset=self.charset, force_charset=self.force_charset)
        if message.charset_problem and not self.strict_charset:
            self.log.warning(
                "channel %s: control id %s: %s; stored as received (set the channel's charset or "
                "force_charset for this sender)",
                self.channel,
                printable(message.control_id),
                message.charset_problem,
                extra=_context(message, "charset_problem"),
            )
        return message

    def _frame_problem(self, message: Message) -> AckError | None:
        """What makes ``message`` unacceptable before any check of the channel runs."""
        if self.strict_charset and message.charset_problem:
            return AckError(207, f"{message.charset_problem}; this channel refuses it", CHARSET_FIELD)
        return structure_problem(message)

    def _screen(self, message: Message) -> Accepted | _Answer | defer.Deferred[Accepted | _Answer]:
        """The check's verdict, or the refusal to answer with. At once, unless the check has
        work to do off the reactor thread (hl7apy validation): then a Deferred."""
        problem = self._frame_problem(message)
        if problem is not None:
            return self._refused(Failure(Refused(problem)), message)
        try:
            verdict = self.check(message)
        except Exception:
            return self._refused(Failure(), message)
        if isinstance(verdict, defer.Deferred):
            return verdict.addErrback(self._refused, message)
        return verdict

    def _refused(self, failure: Failure, message: Message) -> _Answer:
        if failure.check(Refused):
            refusal: Refused = failure.value
            self.log.warning(
                "channel %s: refused %s control id %s: ERR %d %s",
                self.channel,
                printable(_type(message)),
                printable(message.control_id),
                refusal.error.code,
                refusal.error.text,
                extra=_context(message, "refused"),
            )
            return _Answer(refusal.outcome, refusal.error, committed=False)
        self.log.error(
            "channel %s: error checking control id %s: %s",
            self.channel,
            printable(message.control_id),
            loggable_error(failure.value),
            extra=_context(message, "check_failed"),
        )
        return _Answer(REJECT, INTERNAL_ERROR, committed=False)

    def _store(
        self, verdict: Accepted | _Answer, message: Message, payload: bytes, peer: str
    ) -> defer.Deferred[_Answer]:
        if isinstance(verdict, _Answer):
            return defer.succeed(verdict)
        d = self._commit(self.store.receive, self._incoming(message, payload, peer, verdict))
        return d.addCallbacks(
            self._stored,
            self._store_failed,
            callbackArgs=(verdict.destinations, verdict.state),
            errbackArgs=(message,),
        )

    def _commit(self, write: Callable[[T], defer.Deferred[R]], incoming: T) -> defer.Deferred[R]:
        """``write(incoming)`` to the store, its commit timed."""
        started = self.metrics.timer()
        d = defer.maybeDeferred(write, incoming)
        return d.addBoth(self._observe, self.metrics.commit_latency, started)

    def _observe(self, result: R, histogram: Histogram, started: float) -> R:
        histogram.observe(self.metrics.timer() - started)
        return result

    def _stored(self, receipt: Receipt, destinations: tuple[str, ...], state: str) -> _Answer:
        if receipt.duplicate:
            self.metrics.duplicates.inc()
        elif state == FILTERED:
            self.metrics.filtered.inc()
        else:
            self.metrics.accepted.inc()
        if receipt.duplicate and self.reject_duplicates:
            return _Answer(REJECT, DUPLICATE, committed=True)
        if not receipt.duplicate and destinations and self.on_queued is not None:
            self.on_queued(destinations)
        return _Answer(ACCEPT, None, committed=True, code=receipt.ack_code)

    def _store_failed(self, failure: Failure, message: Message) -> _Answer:
        self.log.error(
            "channel %s: could not store control id %s: %s",
            self.channel,
            printable(message.control_id),
            loggable_error(failure.value),
            extra=_context(message, "store_failed"),
        )
        return _Answer(ERROR, STORE_FAILED, committed=False)

    def _record_ack(self, message: Message, payload: bytes, peer: str) -> defer.Deferred[Reply]:
        """Keep an inbound ACK for the audit trail, and never answer it (two engines would
        loop) unless its MSH-15 asks for a commit ACK, as a status message in enhanced mode does."""
        self.log.info(
            "channel %s: %s: received an ACK (%s); recorded",
            self.channel,
            peer,
            printable(message.control_id),
            extra=_context(message, "ack_received"),
        )
        d = self._commit(
            self.store.receive, self._incoming(message, payload, peer, Accepted((), "ACK_RECEIVED"))
        )
        d.addCallbacks(
            lambda _: _Answer(ACCEPT, None, committed=True), self._store_failed, errbackArgs=(message,)
        )
        return d.addCallback(self._reply, message, counted=False)  # not received: not refused either

    def _handle_batch(self, batch: Batch, peer: str) -> defer.Deferred[Reply]:
        """Check every message of a batch, store the accepted ones in one transaction, and
        answer with an acknowledgement batch holding one ACK per message, in order."""
        items = [_BatchItem(raw, self._parse_or_none(raw)) for raw in batch.messages]
        self.metrics.received.inc(len(items))
        screened = [
            defer.maybeDeferred(self._screen, item.message) for item in items if item.message is not None
        ]
        d = defer.gatherResults(screened, consumeErrors=True)
        d.addCallback(self._store_batch, items, peer)
        d.addCallback(self._batch_reply, batch, items)
        return d

    def _batch_reply(self, committed: bool, batch: Batch, items: list[_BatchItem]) -> Reply:
        acks = [self._answer(item.message, item.answer, force=True) for item in items]
        reply = Reply(
            build_batch_ack(batch, acks, control_id=self.control_ids(), timestamp=self._now()), committed
        )
        for item in items:
            self._count(item.answer)
        return reply

    def _parse_or_none(self, payload: bytes) -> Message | None:
        try:
            return self._parse(payload)
        except MessageError:
            return None

    def _store_batch(
        self, verdicts: list[Accepted | _Answer], items: list[_BatchItem], peer: str
    ) -> defer.Deferred[bool]:
        readable = [item for item in items if item.message is not None]
        accepted = []
        for item, verdict in zip(readable, verdicts, strict=True):
            if isinstance(verdict, _Answer):
                item.answer = verdict
            else:
                item.incoming = self._incoming(item.message, item.raw, peer, verdict)
                accepted.append(item)
        if not accepted:
            return defer.succeed(False)  # nothing stored: MLLP release 2 says so with 0x15
        d = self._commit(self.store.receive_many, [item.incoming for item in accepted])

        def stored(receipts: list[Receipt]) -> bool:
            for item, receipt in zip(accepted, receipts, strict=True):
                item.answer = self._stored(receipt, item.incoming.destinations, item.incoming.state)
            return True

        def failed(failure: Failure) -> bool:
            for item in accepted:
                item.answer = self._store_failed(failure, item.message)
            return False

        return d.addCallbacks(stored, failed)

    def _reply(self, answer: _Answer, message: Message | None, counted: bool = True) -> Reply:
        reply = Reply(self._answer(message, answer), answer.committed)
        if counted:
            self._count(answer)
        return reply

    def _count(self, answer: _Answer) -> None:
        """A refusal is counted once its answer is built: a frame whose handling fails before
        that is counted once, by :meth:`refuse_failed`, whatever its messages' verdicts were."""
        if not answer.committed and answer.error is not None:
            self.metrics.refused(answer.error.code)

    # ACK building

    def _incoming(self, message: Message, payload: bytes, peer: str, accepted: Accepted) -> Incoming:
        return Incoming(
            channel=self.channel,
            raw=payload,
            sending_application=message.sending_application,
            sending_facility=message.sending_facility,
            control_id=message.control_id,
            message_type=_type(message),
            received_at=self.clock.seconds(),
            peer=peer,
            state=accepted.state,
            ack_code=("C" if self._enhanced(message) else "A") + ACCEPT,
            application_ack=message.application_ack_type,
            destinations=accepted.destinations if accepted.state == "RECEIVED" else (),
            order_keys=accepted.order_keys,
            duplicate_window_s=self.duplicate_window_s,
        )

    def _enhanced(self, message: Message) -> bool:
        if self.ack_mode == "auto":
            return is_enhanced_mode(message)
        return self.ack_mode == "enhanced"

    def _answer(self, message: Message | None, answer: _Answer, *, force: bool = False) -> bytes | None:
        """The ACK for ``answer`` (None when none is wanted); for an unreadable message (None),
        an AR with MSA-2 empty."""
        if message is None:
            error = answer.error or NOT_HL7
            return build_unreadable_nak(control_id=self.control_ids(), timestamp=self._now(), error=error)
        enhanced = self._enhanced(message)
        if not force and not ack_wanted(message, answer.outcome, enhanced=enhanced):
            return None
        if answer.code is not None:
            enhanced = answer.code.startswith("C")
        return build_ack(
            message,
            answer.outcome,
            control_id=self.control_ids(),
            timestamp=self._now(),
            errors=() if answer.error is None else (answer.error,),
            enhanced=enhanced,
        )

    def _now(self) -> datetime:
        """The ACK time (HL7 DTM to the second): converted to local time once a second."""
        second = int(self.clock.seconds())
        if second != self._second:
            self._second = second
            self._second_as_time = datetime.fromtimestamp(second, UTC).astimezone()
        return self._second_as_time


@dataclass(frozen=True)
class _Answer:
    outcome: str
    error: AckError | None
    committed: bool
    """False: the message was refused (it is counted so, once, with its ERR-3 code)."""
    code: str | None = None
    """The ACK code recorded with a stored message (AA or CA), reused for its duplicates."""


UNREADABLE = _Answer(REJECT, NOT_HL7, committed=False)
FAILED = _Answer(REJECT, INTERNAL_ERROR, committed=False)


@dataclass
class _BatchItem:
    """One message of a batch on its way through: parsed, then refused or stored."""

    raw: bytes
    message: Message | None
    answer: _Answer = UNREADABLE
    """Until the message is refused or stored; an unreadable one's for good."""
    incoming: Incoming | None = None


def _context(message: Message, event: str) -> dict[str, str]:
    """A log line's ``extra``: what happened, to which message (:mod:`engine.logs`)."""
    return {"control_id": printable(message.control_id), "event": event}


def _type(message: Message) -> str:
    return f"{message.message_type}^{message.trigger_event}"
