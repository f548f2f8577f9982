"""The status reporter: transitions → status messages → durable outbox → MLLP, in order.

Every HL7 message for the hospital is written to the store's outbox first: a status ACK in
the same transaction as the delivery's state change it reports (the queue and the status
tracker store what :meth:`StatusReporter.reports` builds, so a crash never keeps one without
the other), vendor replies and inbound Direct messages through :meth:`StatusReporter.enqueue`
(which fires once committed). Then one :class:`ChannelSender` per channel sends the outbox
strictly in order:
the head item is retried with backoff until the peer acknowledges it (AA, or CA, with MSA-2
= its MSH-10), and nothing behind it goes first.

A peer that answers with an error (AE/AR/CE/CR), or acknowledges another control id, has
not taken the item: it is retried like a timeout, with backoff capped at ``Backoff.max_s``,
and every failed attempt is logged. The channel's later items wait behind it by design.

With several nodes on one store, one node at a time sends a channel's outbox: the sender
holds the named lease ``outbox:<channel>`` (:class:`engine.node.NamedLease`) while it sends,
and another node's sender takes it over once it runs out. The other nodes only add items.

Delivery is at least once: if Courier stops after the peer ACKed an item but before the
store marked it SENT, that one item is sent again after the restart. Its MSH-10 is the same,
so the receiver can spot the repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.endpoints import clientFromString, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactor

from engine.channel.config import Channel, StatusReports
from engine.channel.endpoints import connect_host
from engine.errors import MessageError
from engine.leases import NamedLease
from engine.message import Message
from engine.mllp.client import MLLPClientProtocol
from engine.source import ControlIds
from engine.status.messages import Transition, build_status_message, is_wanted
from engine.store import OutboxEntry, OutboxItem, Store
from engine.tls import TLSSettings, client_options

log = logging.getLogger(__name__)

ACCEPTED_REPLIES = frozenset({"AA", "CA"})


class NotAcknowledged(Exception):
    """The peer's answer does not acknowledge the status message we sent."""


@dataclass(frozen=True)
class Backoff:
    """Wait before retrying an unacknowledged item: ``initial_s * factor**attempts``, capped."""

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 300.0

    def delay(self, attempts: int) -> float:
        return min(self.max_s, self.initial_s * self.factor ** min(attempts, 64))


def check_acknowledgement(reply: bytes, control_id: str) -> None:
    """Raise :class:`NotAcknowledged` unless ``reply`` is an AA/CA whose MSA-2 is ``control_id``."""
    try:
        msa = Message.parse(reply, default_charset="latin-1").segment("MSA")
    except MessageError as exc:
        raise NotAcknowledged(f"the reply is not HL7: {exc}") from None
    if msa is None:
        raise NotAcknowledged("the reply has no MSA segment")
    if msa.value(2) != control_id:
        raise NotAcknowledged("the reply acknowledges another message (MSA-2 differs)")
    if msa.value(1) not in ACCEPTED_REPLIES:
        raise NotAcknowledged(f"the peer answered {msa.value(1) or 'without MSA-1'}")


def status_tls(reports: StatusReports) -> object | None:
    """The client TLS options of ``reports.to``, its files read (None: plain TCP). Read with the
    channel files, away from the reactor (:func:`engine.reload.prepare`), so that neither a
    reload nor a connection waits for the disk on the reactor."""
    if reports.tls is None:
        return None
    settings = TLSSettings(
        cert_file=reports.tls.cert_file, key_file=reports.tls.key_file, ca_file=reports.tls.ca_file
    )
    host = connect_host(clientFromString(MemoryReactor(), reports.to))
    return client_options(settings, host or "localhost")


def status_endpoint(
    reactor: IReactorTime, reports: StatusReports, tls: object | None
) -> IStreamClientEndpoint:
    """The client endpoint of ``reports.to`` with its connect timeout, wrapped in ``tls``
    (:func:`status_tls`) if set."""
    description = reports.to
    if "timeout=" not in description:
        description += f":timeout={reports.connect_timeout_s:g}"
    endpoint = clientFromString(reactor, description)
    return endpoint if tls is None else wrapClientTLS(tls, endpoint)


class ChannelSender:
    """Sends one channel's outbox in order over one reused MLLP connection."""

    def __init__(
        self,
        channel: str,
        reports: StatusReports,
        store: Store,
        reactor: IReactorTime,
        *,
        tls: object | None,
        backoff: Backoff,
        idle_poll_s: float,
        lease: NamedLease | None = None,
    ) -> None:
        self.channel = channel
        self._lease = lease
        self.reports = reports
        self.store = store
        self.clock = reactor
        self.backoff = backoff
        self.idle_poll_s = idle_poll_s
        self._endpoint = status_endpoint(reactor, reports, tls)
        self._client: MLLPClientProtocol | None = None
        self._wakeup: Deferred[None] | None = None
        self._running = False
        self._finished: Deferred[None] | None = None

    def start(self) -> None:
        if self._running:  # started already (a reloaded channel's sender)
            return
        self._running = True
        self._finished = self._run()

    def stop(self) -> Deferred[None]:
        """Stop after the exchange in progress (if any); the outbox keeps what is left."""
        self._running = False
        self.wake()
        if self._client is not None:
            self._client.close()
        d = self._finished or succeed(None)
        if self._lease is not None:
            d.addCallback(lambda _: self._lease.release())
        return d

    def wake(self) -> None:
        """Something was added: look at the outbox now rather than at the next poll."""
        if self._wakeup is not None and not self._wakeup.called:
            self._wakeup.callback(None)

    @inlineCallbacks
    def _run(self):
        while self._running:
            try:
                if self._lease is not None and not (yield self._lease.take()):
                    yield self._sleep(self.idle_poll_s)  # another node sends this outbox
                    continue
                item = yield self.store.outbox_next(self.channel, self.clock.seconds())
                if not self._running:  # stopped while the store answered: begin no exchange
                    break
                if item is None:
                    yield self._sleep(self.idle_poll_s)
                else:
                    yield self._deliver(item)
            except Exception:
                log.exception("status reports for channel %s: store error; trying again", self.channel)
                yield self._sleep(self.idle_poll_s)

    @inlineCallbacks
    def _deliver(self, item: OutboxItem):
        try:
            client = yield self._connection()
            if not self._running or not self._holds_lease():
                self._drop_connection()  # stopped, or the lease was lost while connecting
                return
            reply = yield client.send(item.payload, timeout=self.reports.ack_timeout_s)
            check_acknowledgement(reply, item.control_id)
        except Exception as exc:
            delay = self.backoff.delay(item.attempts)
            log.warning(
                "status reports for channel %s: outbox item %d (%s) not acknowledged: %s; retrying in %.1fs",
                self.channel,
                item.id,
                item.control_id,
                exc,
                delay,
            )
            self._drop_connection()
            yield self.store.outbox_retry(item.id, self.clock.seconds() + delay, str(exc))
            if self._running:
                yield self._sleep(delay)
            return
        yield self.store.outbox_done(item.id)
        log.info(
            "status reports for channel %s: outbox item %d (%s) acknowledged",
            self.channel,
            item.id,
            item.control_id,
        )

    def _holds_lease(self) -> bool:
        return self._lease is None or self._lease.held()

    def _connection(self) -> Deferred[MLLPClientProtocol]:
        if self._client is not None:
            return succeed(self._client)
        d = connectProtocol(self._endpoint, MLLPClientProtocol(self.clock))
        return d.addCallback(self._connected)

    def _connected(self, client: MLLPClientProtocol) -> MLLPClientProtocol:
        self._client = client
        client.closed.addCallback(self._forget, client)
        return client

    def _forget(self, _: None, client: MLLPClientProtocol) -> None:
        if self._client is client:
            self._client = None

    def _drop_connection(self) -> None:
        """After a failed exchange a late reply must never be matched to the next item."""
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def _sleep(self, seconds: float) -> Deferred[None]:
        """Fires after ``seconds``, or earlier on :meth:`wake`; at once when stopping."""
        if not self._running:
            return succeed(None)
        wakeup: Deferred[None] = Deferred()
        call = self.clock.callLater(seconds, self.wake)
        self._wakeup = wakeup

        def cancel_timer(result: None) -> None:
            if call.active():
                call.cancel()
            return result

        return wakeup.addBoth(cancel_timer)


class StatusReporter:
    """The :class:`TransitionListener` of the delivery queue, and the outbox of ``engine.status``."""

    def __init__(
        self,
        store: Store,
        reactor: IReactorTime,
        channels: Iterable[Channel],
        *,
        backoff: Backoff = Backoff(),
        idle_poll_s: float = 5.0,
        lease_s: float | None = None,
    ) -> None:
        """With ``lease_s`` (several nodes may share the store) each channel's outbox is sent
        only while this node holds its lease."""
        self.store = store
        self.clock = reactor
        self.control_ids = ControlIds()  # for status reports, replies and inbound documents alike
        self._backoff = backoff
        self._idle_poll_s = idle_poll_s
        self._lease_s = lease_s
        self._running = False
        self._channels: dict[str, Channel] = {}
        self._senders: dict[str, ChannelSender] = {}
        for channel in channels:
            reports = channel.status_reports
            self.set_channel(channel, None if reports is None else status_tls(reports))

    def start(self) -> None:
        """Start every channel's sender; items left PENDING by an earlier run go first."""
        self._running = True
        for sender in self._senders.values():
            sender.start()

    def stop(self) -> Deferred[None]:
        self._running = False
        return gatherResults([s.stop() for s in self._senders.values()]).addCallback(lambda _: None)

    def set_channel(self, channel: Channel, tls: object | None) -> Deferred[None]:
        """Report for ``channel`` as configured now (started, or reloaded: the sender of its
        earlier version finishes its exchange first, then the new one starts if this runs),
        over ``tls`` (:func:`status_tls`). Fires once the earlier sender has stopped."""
        name = channel.name
        stopped = self.remove_channel(name)
        if channel.status_reports is None:
            return stopped
        self._channels[name] = channel
        sender = self._senders[name] = ChannelSender(
            name,
            channel.status_reports,
            self.store,
            self.clock,
            tls=tls,
            backoff=self._backoff,
            idle_poll_s=self._idle_poll_s,
            lease=None
            if self._lease_s is None
            else NamedLease(self.store, self.clock, f"outbox:{name}", self._lease_s),
        )

        def start(_: object) -> None:
            if self._running and self._senders.get(name) is sender:
                sender.start()

        return stopped.addCallback(start)

    def remove_channel(self, name: str) -> Deferred[None]:
        """Stop reporting for channel ``name`` (after its queues stopped): its sender finishes
        the exchange in progress, and the rest of its outbox waits in the store."""
        self._channels.pop(name, None)
        sender = self._senders.pop(name, None)
        return sender.stop() if sender is not None else succeed(None)

    def enqueue(self, channel: str, payload: bytes, control_id: str) -> Deferred[int]:
        """Store an HL7 message for the hospital; fires (with the outbox id) once it is durable."""
        if channel not in self._channels:
            raise ValueError(f"channel {channel!r} has no [status_reports] section")
        target = self._channels[channel].status_reports.to
        d = self.store.outbox_add(channel, target, payload, control_id)
        return d.addCallback(self._added, channel)

    def _added(self, item_id: int, channel: str) -> int:
        self._senders[channel].wake()
        return item_id

    def reports(self, transition: Transition, original: bytes) -> list[OutboxEntry]:
        """The status message the channel (or the original's MSH-16) asks for, if any: stored
        by the caller with the state change it reports. ``original``: the message as stored."""
        channel = self._channels.get(transition.channel)
        if channel is None:
            return []
        message = Message.parse(original, default_charset="latin-1")
        if not is_wanted(message, transition.event, channel.status_reports.events):
            return []
        vendors = {d.name: d.type for d in channel.destinations}
        control_id = self.control_ids()
        payload = build_status_message(
            message,
            transition,
            vendor=vendors.get(transition.destination, ""),
            control_id=control_id,
            now=datetime.fromtimestamp(self.clock.seconds(), UTC),
        )
        return [OutboxEntry(transition.channel, channel.status_reports.to, control_id, payload)]

    def on_transition(self, transition: Transition) -> None:
        """Its report, if any, is committed: the channel's sender looks at once."""
        sender = self._senders.get(transition.channel)
        if sender is not None:
            sender.wake()
