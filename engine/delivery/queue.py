"""The queue of one destination: due QUEUED deliveries → mapped payload → vendor → new state.

Each destination has its own :class:`DeliveryQueue` with its own threads (``concurrency``),
rate limit and schedule, so a slow or broken vendor never delays another one; inside one
destination a failing delivery is rescheduled into the future (``next_attempt_at``) and the
deliveries behind it still go. The payload is mapped again from the *stored* raw message, so
a corrected mapping plus ``courier deliveries requeue`` replays cleanly.

Outcomes (Mirth words): ACCEPTED → SENT; RETRY → QUEUED at exponential backoff with jitter
(never sooner than the vendor's Retry-After) until ``max_attempts`` or ``max_age_s``, then
ERROR (dead letter); REJECTED or a mapping failure → ERROR; AUTH_FAILED (any set-up error:
credentials, 403, a missing endpoint, DNS, TLS) → QUEUED again without counting the attempt,
the whole queue held, and an ERROR log line telling the operator why and what to do.

**Delivery is at-least-once.** A claimed delivery is SENDING, leased to this node, until its
outcome is committed; the queue renews the lease while the send is in flight, and a lease
that runs out (its node died) is taken over by whichever node claims next (a restarted node
takes back at once what its previous run held: :mod:`engine.node`). A duplicate can
therefore reach the vendor when a node dies (or the store fails) *after the vendor accepted
a message and before SENT was committed*. conneQt and MedAllies then see the same
``messageId`` (derived from :func:`idempotency_key`, which belongs to the delivery, not to
the attempt or the node) and answer with the original acknowledgement without delivering
twice. Qliq and KPN have no idempotency key: there the recipient gets the
message twice (a Qliq resend lands in the same conversation when it has a thread key).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from functools import partial
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import blockingCallFromThread

from engine.channel.config import Destination as DestinationConfig
from engine.delivery import polling, transitions
from engine.delivery.backoff import give_up_reason, retry_delay
from engine.delivery.conversations import Conversations, remember_conversation, thread_key
from engine.delivery.pump import Pump
from engine.delivery.ratelimit import Pacer
from engine.delivery.transitions import TransitionListener, record, transition_of
from engine.delivery.workers import Workers
from engine.destinations.base import Destination, InvalidParameter, Outcome, SendResult
from engine.destinations.plugin import AccountRate
from engine.errors import MessageError
from engine.logs import context_log, loggable_error
from engine.mapping import Mapping as PayloadMapping
from engine.mapping import MappingFailure
from engine.message import Message
from engine.metrics import DestinationMetrics, Metrics
from engine.node import DEFAULT_LEASE_S, RENEW_FRACTION
from engine.screen import mapping_context
from engine.store.base import ERROR, SENT, Delivery, Store
from engine.store.rate_buckets import ACCOUNT_PREFIX, RateBucket

log = logging.getLogger(__name__)

DEFAULT_IDLE_S = 2.0
DEFAULT_AUTH_RETRY_S = 60.0


def idempotency_key(delivery: Delivery) -> str:
    """The same on every attempt of one stored delivery, and across restarts.

    The store's row id alone is not enough: a fresh or restored store numbers rows from 1
    again, and a vendor would then see a known id with other content. The time the delivery
    was queued makes the key belong to this stored message only. A requeue (a corrected
    mapping replayed) starts a new generation, which the vendor must take as a new message.
    """
    key = f"{delivery.channel}:{delivery.destination}:{delivery.message_id}:{delivery.created_at!r}"
    return f"{key}:{delivery.requeues}" if delivery.requeues else key


class DeliveryQueue(Service):
    """Delivers one destination's QUEUED rows. Call :meth:`wake` after storing new ones."""

    def __init__(
        self,
        *,
        channel: str,
        config: DestinationConfig,
        destination: Destination,
        mapping: PayloadMapping,
        store: Store,
        reactor: IReactorFromThreads,
        clock: IReactorTime,
        listener: TransitionListener | None = None,
        conversations: Conversations | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        idle_s: float = DEFAULT_IDLE_S,
        auth_retry_s: float = DEFAULT_AUTH_RETRY_S,
        rng: random.Random | None = None,
        metrics: DestinationMetrics | None = None,
        account: AccountRate | None = None,
    ) -> None:
        self.channel = channel
        self.name = config.name
        self.config = config
        self.destination = destination
        self.mapping = mapping
        self._store = store
        self._reactor = reactor
        self._clock = clock
        self._listener = listener
        self._conversations = conversations
        self._lease_s = lease_s
        self._idle_s = idle_s
        self._auth_retry_s = auth_retry_s
        self._rng = rng or random.Random()
        self._log = context_log(log, channel=channel, destination=config.name)
        self._metrics = metrics or Metrics().destination(channel, config.name)
        self._account = account
        self._pacer: Pacer | None = None  # built at start: an account's bucket is a keyed hash
        self._workers = Workers(reactor, f"delivery-{self.name}", config.concurrency)
        self._pump = Pump(f"queue {self.name}", clock, self._step)
        self._in_flight: dict[int, Deferred[None]] = {}
        self._unsent: set[int] = set()  # in flight, not yet past the rate limit
        self._leased_until: dict[int, float] = {}  # in flight: until when its lease surely holds
        self._renewal = LoopingCall(self._renew_leases)
        self._renewal.clock = clock
        self._paused_until = 0.0
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start delivering (what an earlier run left SENDING is taken back by the node
        registration, or by any node once its lease runs out)."""
        buckets = self._rate_buckets()
        self._pacer = Pacer(self._store, buckets, self._clock) if buckets else None
        if self._pacer is not None:
            self.destination.pace = partial(self._pace_from_thread, self._pacer)
        self._workers.start()
        self._pump.start()
        self._renewal.start(self._lease_s / RENEW_FRACTION, now=False)

    def _rate_buckets(self) -> list[RateBucket]:
        """The limits each send counts against: the destination's and its vendor account's."""
        rate, account = self.config.rate_limit, self._account
        buckets = [RateBucket(self.name, rate.per_second, rate.burst)] if rate.per_second else []
        if account is not None:
            name = ACCOUNT_PREFIX + self._store.keyed_hash(account.key)
            buckets.append(RateBucket(name, account.per_second, account.burst))
        return buckets

    def _pace_from_thread(self, pacer: Pacer) -> bool:
        """In a worker thread: wait for the rate limits before a send's further request."""
        try:
            blockingCallFromThread(self._reactor, pacer.wait)
        except CancelledError:
            return False
        return True

    def wake(self) -> None:
        """New deliveries were stored (or requeued): look for due rows now."""
        self._pump.wake()

    def stop(self) -> Deferred[None]:
        """Stop claiming, let in-flight sends finish (bounded by the vendor timeouts), stop threads.

        Deliveries still waiting for the rate limit are not sent: they stay SENDING, and the
        next start of this node (or another node once their leases run out) sends them."""
        self._stopped = True
        if self._pacer is not None:
            self._pacer.stop()
        d = self._pump.stop()
        d.addCallback(lambda _: DeferredList(list(self._in_flight.values())))
        d.addCallback(lambda _: self._renewal.running and self._renewal.stop())
        d.addCallback(lambda _: self._workers.stop())
        return d

    def startService(self) -> None:
        super().startService()
        self.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.stop()

    # -- claiming ------------------------------------------------------------------------

    def _step(self) -> Deferred[float | None] | float | None:
        now = self._clock.seconds()
        if now < self._paused_until:
            return self._paused_until - now
        free = self.config.concurrency - len(self._in_flight)
        if self._pacer is not None:  # never more claimed than the limit lets go soon
            free = min(free, self._pacer.ahead - len(self._unsent))
        if free <= 0:
            return None  # a finishing delivery, or one the rate limit lets go, wakes the pump
        d = self._store.claim_due(self.name, now, free, self._lease_s, self.config.concurrency)
        return d.addCallback(self._claimed, free, now)

    def _claimed(
        self, deliveries: list[Delivery], asked: int, claimed_at: float
    ) -> Deferred[float | None] | float:
        for delivery in deliveries:
            self._leased_until[delivery.id] = claimed_at + self._lease_s
            self._unsent.add(delivery.id)
            d = self._in_flight[delivery.id] = self._deliver(delivery)
            d.addBoth(self._finished, delivery.id)
        if len(deliveries) == asked:
            return 0.0  # there may be more due rows
        return self._store.next_attempt_due(self.name).addCallback(self._sleep_until)

    def _sleep_until(self, due: float | None) -> float:
        """Until the next delivery is due. One due already was not claimable: it waits behind
        another of its order_by key, or for a free slot of concurrency taken by another node.
        A send ending here wakes the queue; one ending on another node, the next idle look."""
        if due is None or due <= self._clock.seconds():
            return self._idle_s
        return min(due - self._clock.seconds(), self._idle_s)

    def _finished(self, _: object, delivery_id: int) -> None:
        del self._in_flight[delivery_id]
        self._leased_until.pop(delivery_id, None)
        self._let_go(delivery_id)

    def _let_go(self, delivery_id: int) -> None:
        """The delivery is past the rate limit (or never needed it): room for another claim."""
        self._unsent.discard(delivery_id)
        self._pump.wake()

    def _renew_leases(self) -> Deferred[None] | None:
        """Every ``lease_s / RENEW_FRACTION``: the sends in flight keep their leases."""
        if not self._in_flight:
            return None
        asked_at = self._clock.seconds()
        ids = list(self._in_flight)
        d = self._store.renew_leases(ids, asked_at + self._lease_s)
        d.addCallbacks(self._renewed, self._renewal_failed, callbackArgs=(ids, asked_at))
        return d

    def _renewed(self, lost: list[int], asked: list[int], asked_at: float) -> None:
        for delivery_id in asked:
            if delivery_id in self._leased_until and delivery_id not in lost:
                self._leased_until[delivery_id] = asked_at + self._lease_s
        for delivery_id in lost:
            if delivery_id not in self._leased_until:
                continue  # its outcome was recorded meanwhile: no longer SENDING, not taken over
            self._leased_until.pop(delivery_id)
            log.error(
                "queue %s: delivery %d: its lease passed to another node (this one stalled longer"
                " than the lease); its outcome here will not be recorded",
                self.name,
                delivery_id,
            )

    def _renewal_failed(self, failure) -> None:
        log.error(
            "queue %s: renewing the leases of sends in flight failed: %s",
            self.name,
            loggable_error(failure.value),
        )

    def _still_leased(self, delivery: Delivery) -> bool:
        """Whether this node surely still holds the delivery's lease (else another may send it)."""
        return self._clock.seconds() < self._leased_until.get(delivery.id, 0.0)

    # -- one delivery --------------------------------------------------------------------

    @inlineCallbacks
    def _deliver(self, delivery: Delivery):
        try:
            try:
                payload, thread = yield self._workers.run(self._prepare, delivery.raw)
            except MappingFailure as failure:
                detail = f"mapping failed at send time: {failure.text}"
                yield self._error(delivery, transitions.REJECTED, detail)
                return
            except MessageError:
                yield self._error(delivery, transitions.REJECTED, "the stored message cannot be read as HL7")
                return
            conversation_id = (yield self._conversations.get(thread)) if thread else None
            if self._pacer is not None:
                try:
                    yield self._pacer.wait()
                except CancelledError:
                    log.info("queue %s: stopped before delivery %d's turn", self.name, delivery.id)
                    return
                self._let_go(delivery.id)
            if not self._still_leased(delivery):
                log.error(
                    "queue %s: delivery %d not sent: its lease ran out before the send",
                    self.name,
                    delivery.id,
                )
                return
            key = idempotency_key(delivery)
            result = yield self._workers.run(self._send, payload, key, conversation_id, delivery.progress)
            yield self._record(delivery, result, payload, thread)
        except Exception as exc:  # the store failed, the lease passed to another node, or a bug
            self._log.error(
                "queue %s: delivery %d left SENDING (its lease runs out, then it is sent again): %s",
                self.name,
                delivery.id,
                loggable_error(exc),
                extra={"control_id": delivery.control_id, "event": "left_sending"},
            )

    def _prepare(self, raw: bytes) -> tuple[dict[str, Any], str | None]:
        """In a worker thread: parse the stored message and map it (a big PDF takes a while)."""
        message = Message.parse(raw)
        payload = self.mapping.apply(message, context=mapping_context(self.channel, self.name))
        thread = thread_key(message, self.channel, self.name) if self._conversations else None
        return payload, thread

    def _send(
        self, payload: dict[str, Any], key: str, conversation_id: str | None, resume: str | None
    ) -> SendResult:
        """In a worker thread. A destination never raises for HTTP; anything else is a bug
        (logged by type only, the traceback could quote the payload) and is retried."""
        started = self._metrics.timer()
        try:
            result = self.destination.send(
                payload, idempotency_key=key, conversation_id=conversation_id, resume=resume
            )
        except Exception as exc:
            self._log.error(
                "queue %s: %s destination raised %s", self.name, self.destination.kind, type(exc).__name__
            )
            result = SendResult(Outcome.RETRY, reason=f"internal error ({type(exc).__name__})")
        self._metrics.answered(result.http_status, self._metrics.timer() - started)
        return result

    def _record(
        self, delivery: Delivery, result: SendResult, payload: Mapping[str, Any], thread: str | None
    ) -> Deferred[None]:
        if result.outcome is Outcome.ACCEPTED:
            return self._sent(delivery, result, payload, thread)
        if result.outcome is Outcome.REJECTED:
            rejected = f"rejected by {self.destination.kind}: "
            return self._error(
                delivery,
                transitions.REJECTED,
                rejected + result.reason,
                result.invalid_parameters,
                logged=rejected + result.loggable_reason,
            )
        if result.outcome is Outcome.AUTH_FAILED:
            return self._auth_failed(delivery, result)
        return self._retry(delivery, result)

    @inlineCallbacks
    def _sent(self, delivery: Delivery, result: SendResult, payload: Mapping[str, Any], thread: str | None):
        now = self._clock.seconds()
        if self._conversations is not None and result.conversation_id:
            # a reply in this conversation answers this message (the latest one in it)
            yield remember_conversation(
                self._store, self.destination.kind, result.conversation_id, self.channel, delivery.message_id
            )
            if thread:
                yield self._conversations.remember(thread, result.conversation_id)
        remote_id = result.remote_id or ""
        detail = f"accepted by {self.destination.kind}"
        kind = self.destination.kind
        poll = None
        if remote_id and self.destination.has_status_api:
            expires_at = polling.payload_expiry(kind, payload)
            poll = polling.first_poll(kind, self.config.status, self.name, now, expires_at)
        if poll is None:
            change = partial(self._store.mark_sent, delivery.id, remote_id, detail)
        else:
            change = partial(self._store.mark_sent_polled, delivery.id, remote_id, detail, poll)
        transition = transition_of(
            delivery, SENT, transitions.ACCEPTED, now, detail, remote_id=remote_id or None
        )
        yield record(self._listener, transition, delivery.raw, change)
        self._metrics.sent.inc()
        self._metrics.held(None)

    @inlineCallbacks
    def _retry(self, delivery: Delivery, result: SendResult):
        now = self._clock.seconds()
        queued_at = delivery.requeued_at or delivery.created_at
        gave_up = give_up_reason(self.config.retry, delivery.attempts, queued_at, now)
        if gave_up is not None:
            yield self._error(
                delivery,
                transitions.DEAD_LETTER,
                f"{gave_up}; last error: {result.reason}",
                logged=f"{gave_up}; last error: {result.loggable_reason}",
            )
            return
        delay = retry_delay(self.config.retry, delivery.attempts, result.retry_after_s, self._rng)
        yield self._store.mark_retry(delivery.id, now + delay, result.reason, result.progress)
        self._metrics.failed.inc()
        self._metrics.held(None)
        self._log.warning(
            "queue %s: delivery %d attempt %d failed (%s); next attempt in %.1f s",
            self.name,
            delivery.id,
            delivery.attempts,
            result.loggable_reason,
            delay,
            extra={"control_id": delivery.control_id, "event": "retry"},
        )

    @inlineCallbacks
    def _auth_failed(self, delivery: Delivery, result: SendResult):
        wait = result.retry_after_s or self._auth_retry_s
        retry_at = self._clock.seconds() + wait
        hold = result.hold or "auth"
        yield self._store.release(delivery.id, retry_at, result.reason, result.progress, hold)
        self._paused_until = max(self._paused_until, retry_at)
        self._metrics.failed.inc()
        self._metrics.held(hold)
        self._log.error(
            "queue %s: destination held (%s): %s. Deliveries stay QUEUED (no attempt counted);"
            " the queue tries again in %.0f s, and resumes by itself once the set-up works.",
            self.name,
            hold,
            result.loggable_reason,
            wait,
            extra={"event": "held"},
        )

    @inlineCallbacks
    def _error(
        self,
        delivery: Delivery,
        event: str,
        detail: str,
        invalid_parameters: tuple[InvalidParameter, ...] = (),
        *,
        logged: str | None = None,
    ):
        """ERROR with ``detail`` stored and reported; ``logged`` leaves out the vendor's words."""
        transition = transition_of(
            delivery, ERROR, event, self._clock.seconds(), detail, invalid_parameters=invalid_parameters
        )
        yield record(
            self._listener, transition, delivery.raw, partial(self._store.mark_error, delivery.id, detail)
        )
        self._metrics.dead_lettered.inc()
        self._metrics.held(None)
        self._log.error(
            "queue %s: delivery %d of message %s is ERROR (%s): %s",
            self.name,
            delivery.id,
            delivery.control_id,
            event,
            detail if logged is None else logged,
            extra={"control_id": delivery.control_id, "event": event},
        )
