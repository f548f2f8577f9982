"""The console's pages and actions, from the store's own queries and the running engine.

``/``: channels (listener, counts over the last hour and day, last message, refusals since
start), destinations (queue depth, hold), dead letters with requeue and cancel, the outbox
with skip. ``/message?control_id=…``: what ``courier status`` prints for it. No message body
is ever read. Actions are POSTs; the site root has checked the session, the CSRF token and
the origin before they run, and each is recorded with the operator's name among the store's
operator actions (shown at the foot of ``/``; a requeue or cancel also in the delivery's events,
a skip in the outbox item's reason) and logged.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from engine.admin.audit import record
from engine.admin.auth import Session
from engine.admin.pages import action, e, layout, table, when
from engine.commands.status import render as status_lines
from engine.message.display import printable
from engine.reload import ReloadReport
from engine.store import DeliverySelection, OperatorAction, Store
from engine.store.base import skipped_by

log = logging.getLogger(__name__)

LIST_LIMIT = 50
ACTIONS_SHOWN = 20
QUEUE_STATES = ("QUEUED", "SENDING", "SENT", "DELIVERED", "READ", "ERROR", "CANCELLED")


class EngineView:
    """What the console reads from the running engine, asked afresh on every page (a reload
    can change it): channel → listener bound, channel → refusals since start, destination →
    (channel, type), a way to wake a destination's queue, and (when the engine can) a reload
    of the channel files that reports what it did."""

    def __init__(
        self,
        listeners: Callable[[], Mapping[str, bool]],
        refusals: Callable[[], Mapping[str, int]],
        destinations: Callable[[], Mapping[str, tuple[str, str]]],
        wake: Callable[[str], None],
        reload: Callable[[], Deferred[ReloadReport]] | None = None,
    ) -> None:
        self.listeners = listeners
        self.refusals = refusals
        self.destinations = destinations
        self.wake = wake
        self.reload = reload


def session_of(request: Request) -> Session:
    """The session the site root found for this request."""
    return request.console_session


def _render_later(request: Request, page: Deferred[bytes]) -> int:
    """Answer with ``page`` once it is ready, unless the client went away meanwhile."""
    gone = []
    request.notifyFinish().addErrback(gone.append)

    def written(body: bytes) -> None:
        if not gone:
            request.write(body)
            request.finish()

    def failed(failure: Failure) -> None:
        log.error("console: a page failed: %s", failure.getErrorMessage())
        if not gone:
            request.setResponseCode(500)
            request.write(b"The console could not read the store; see the engine's log.\n")
            request.finish()

    page.addCallbacks(written, failed)
    return NOT_DONE_YET


class Dashboard(Resource):
    isLeaf = True

    def __init__(self, store: Store, engine: EngineView) -> None:
        super().__init__()
        self._store = store
        self._engine = engine

    def render_GET(self, request: Request) -> int:
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            return layout(request, "Not found", "<p>No such page.</p>", session_of(request))
        return _render_later(request, self._page(request))

    @inlineCallbacks
    def _page(self, request: Request):
        store, now = self._store, time.time()
        hour = yield store.counts(now - 3600)
        day = yield store.counts(now - 86400)
        total = yield store.counts()
        held = yield store.held_destinations()
        dead = yield store.list_deliveries(state="ERROR", limit=LIST_LIMIT)
        outbox = yield store.list_outbox(state="PENDING", limit=LIST_LIMIT)
        actions = yield store.list_actions(limit=ACTIONS_SHOWN)
        listeners = self._engine.listeners()
        last = {}
        for channel in listeners:
            newest = yield store.list_messages(channel, limit=1)
            last[channel] = newest[0].received_at if newest else None
        session = session_of(request)
        body = (
            _search_form()
            + "<h2>Channels</h2>"
            + self._channels(listeners, _messages(hour), _messages(day), last)
            + self._reload_button(session)
            + "<h2>Destinations</h2>"
            + self._destinations(_deliveries(total), {d: (w, at) for d, w, at in held})
            + "<h2>Dead letters</h2>"
            + _dead_letters(session, dead)
            + "<h2>Outbox to the hospital</h2>"
            + _outbox(session, outbox)
            + "<h2>Operator actions</h2>"
            + _actions(actions)
        )
        return layout(request, "Console", body, session, refresh=True)

    def _channels(self, listeners, hour, day, last) -> str:
        refusals = self._engine.refusals()
        rows = []
        for channel, bound in sorted(listeners.items()):
            state = '<span class="good">listening</span>' if bound else '<span class="bad">DOWN</span>'
            rows.append(
                [
                    f'<span class="channel">{e(channel)}</span>',
                    state,
                    _received(hour.get(channel, {})),
                    _received(day.get(channel, {})),
                    e(when(last.get(channel))),
                    e(refusals.get(channel, 0)),
                ]
            )
        headings = ("channel", "listener", "last hour", "last day", "last message", "refused since start")
        return table(headings, rows, "no channel is running")

    def _reload_button(self, session: Session | None) -> str:
        if self._engine.reload is None:
            return ""
        return '<p class="actions">' + action(session, "/reload", "Reload channels", {}) + "</p>"

    def _destinations(self, counts, held) -> str:
        rows = []
        for name, (channel, kind) in sorted(self._engine.destinations().items()):
            states = counts.get((channel, name), {})
            hold = held.get(name)
            shown = (
                f'<span class="bad held">held: {e(hold[0])} (last tried {e(when(hold[1]))})</span>'
                if hold
                else "-"
            )
            rows.append(
                [
                    e(name),
                    e(channel),
                    e(kind),
                    e(states.get("QUEUED", 0) + states.get("SENDING", 0)),
                    e(states.get("SENT", 0) + states.get("DELIVERED", 0) + states.get("READ", 0)),
                    e(states.get("ERROR", 0)),
                    shown,
                ]
            )
        headings = ("destination", "channel", "type", "queued", "sent", "dead letters", "hold")
        return table(headings, rows, "no destination")


def _messages(counts) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for channel, state, count, _ in counts.messages:
        found[channel][state] = count
    return found


def _deliveries(counts) -> dict[tuple[str, str], dict[str, int]]:
    found: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for channel, destination, state, count in counts.deliveries:
        found[(channel, destination)][state] = count
    return found


def _received(states: Mapping[str, int]) -> str:
    filtered = states.get("FILTERED", 0)
    text = e(sum(states.values()))
    return text + (f" ({e(filtered)} filtered)" if filtered else "")


def _search_form(value: str = "") -> str:
    return (
        '<form method="get" action="/message" class="search">'
        f'<input type="search" name="control_id" id="control_id" value="{e(value)}" '
        'placeholder="MSH-10 control id" required> <button type="submit">Find</button></form>'
    )


def _dead_letters(session: Session, dead: list[Any]) -> str:
    rows = [
        [
            e(d.id),
            e(d.destination),
            f'<a href="/message?control_id={e(_quote(d.control_id))}">{e(printable(d.control_id))}</a>',
            e(d.attempts),
            e(when(d.updated_at)),
            action(session, "/deliveries/requeue", "Requeue", {"id": d.id})
            + action(session, "/deliveries/cancel", "Cancel", {"id": d.id}),
        ]
        for d in dead
    ]
    return table(("delivery", "destination", "control id", "attempts", "failed", ""), rows, "no dead letter")


def _outbox(session: Session, items: list[Any]) -> str:
    reason = '<input type="text" name="reason" placeholder="reason (no PHI)" required> '
    rows = [
        [
            e(item.id),
            e(item.channel),
            e(item.seq),
            e(printable(item.control_id)),
            e(item.attempts),
            e(when(item.next_attempt_at)),
            action(session, "/outbox/skip", "Skip", {"id": item.id}, reason),
        ]
        for item in items
    ]
    headings = ("item", "channel", "seq", "control id", "attempts", "next attempt", "")
    return table(headings, rows, "nothing waits")


def _actions(actions: list[OperatorAction]) -> str:
    rows = [
        [e(when(a.at)), e(a.operator), e(a.action), e(a.subject), e(printable(a.detail))] for a in actions
    ]
    return table(("when", "operator", "action", "what", "detail"), rows, "no action yet")


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


class MessageSearch(Resource):
    """``/message?control_id=…``: the timeline across destinations, as ``courier status``."""

    isLeaf = True

    def __init__(self, store: Store) -> None:
        super().__init__()
        self._store = store

    def render_GET(self, request: Request) -> int:
        return _render_later(request, self._page(request))

    @inlineCallbacks
    def _page(self, request: Request):
        control_id = (request.args.get(b"control_id") or [b""])[0].decode("utf-8", "replace").strip()
        session = session_of(request)
        message = yield self._store.get_message(control_id) if control_id else None
        if message is None:
            request.setResponseCode(404)
            shown = f"<p>No message with control id <code>{e(printable(control_id))}</code>.</p>"
            return layout(request, "Not found", _search_form(control_id) + shown, session)
        events = yield self._store.timeline(control_id)
        deliveries = []
        for delivery_id in sorted({ev.delivery_id for ev in events if ev.delivery_id is not None}):
            found = yield self._store.get_delivery(delivery_id)
            if found is not None:
                deliveries.append(found)
        lines = "\n".join(status_lines(message, deliveries, events))
        body = (
            _search_form(control_id)
            + f'<h2>Message {e(printable(control_id))}</h2><pre id="timeline">{e(lines)}</pre>'
        )
        return layout(request, f"Message {printable(control_id)}", body, session)


class _Action(Resource):
    """A POST the root admitted (session, CSRF token, origin); redirects back to the console
    with what it did as the session's notice."""

    isLeaf = True

    def __init__(self, store: Store, engine: EngineView) -> None:
        super().__init__()
        self.store = store
        self.engine = engine

    def render_POST(self, request: Request) -> int:
        session = session_of(request)

        def done(notice: str) -> bytes:
            session.notice = notice
            request.redirect(b"/")
            return b""

        return _render_later(request, self.run(request, session.operator).addCallback(done))

    def run(self, request: Request, operator: str) -> Deferred[str]:
        """Do it; what it did, in one line."""
        raise NotImplementedError


class _ItemAction(_Action):
    """An action on the item (delivery, outbox item) whose id the form posts."""

    def run(self, request: Request, operator: str) -> Deferred[str]:
        try:
            item_id = int((request.args.get(b"id") or [b""])[0])
        except ValueError:
            return succeed("Give the id of what to act on.")
        return self.act(request, operator, item_id)

    def act(self, request: Request, operator: str, item_id: int) -> Deferred[str]:
        raise NotImplementedError


class _DeliveryAction(_ItemAction):
    verb = ""

    @inlineCallbacks
    def act(self, request: Request, operator: str, item_id: int):
        delivery = yield self.store.get_delivery(item_id)
        if delivery is None:
            return f"No delivery {item_id}."
        change = self.store.requeue if self.verb == "requeued" else self.store.cancel
        moved = yield change(DeliverySelection(ids=(item_id,)), by=operator)
        if not moved:
            return f"Delivery {item_id} is {delivery.state}: nothing {self.verb}."
        log.warning(
            "console: operator %s %s delivery %d (%s)", operator, self.verb, item_id, delivery.destination
        )
        self.engine.wake(delivery.destination)
        return f"Delivery {item_id} {self.verb}."


class Requeue(_DeliveryAction):
    verb = "requeued"


class Cancel(_DeliveryAction):
    verb = "cancelled"


class Skip(_ItemAction):
    @inlineCallbacks
    def act(self, request: Request, operator: str, item_id: int):
        reason = (request.args.get(b"reason") or [b""])[0].decode("utf-8", "replace").strip()[:200]
        if not reason:
            return "Give a reason to skip an outbox item."
        skipped = yield self.store.outbox_skip(item_id, skipped_by(operator, reason), by=operator)
        if not skipped:
            return f"Outbox item {item_id} is not PENDING: nothing skipped."
        log.warning("console: operator %s skipped outbox item %d", operator, item_id)
        return f"Outbox item {item_id} skipped."


class Reload(_Action):
    """Reload the channel files as SIGHUP does; refused files are named with their reasons."""

    def run(self, request: Request, operator: str) -> Deferred[str]:
        if self.engine.reload is None:
            return succeed("This engine cannot reload its channel files.")
        log.warning("console: operator %s reloads the channel files", operator)
        d = self.engine.reload()
        d.addCallbacks(lambda report: self._reloaded(operator, report), lambda f: self._failed(operator, f))
        return d

    def _reloaded(self, operator: str, report: ReloadReport) -> str:
        record(self.store, operator, "reloaded", "channel files", report.summary())
        return f"Reload: {reload_said(report)}"

    def _failed(self, operator: str, failure: Failure) -> str:
        record(self.store, operator, "reloaded", "channel files", "failed, nothing changed")
        return f"Reload failed, nothing changed: {failure.getErrorMessage()}"


def reload_said(report: ReloadReport) -> str:
    """What a reload did, with each refusal's reason (configuration only, never PHI). The
    audit trail keeps only the summary: a refusal's reason quotes the file."""
    refused = [str(refusal) for refusal in (*report.refused, *report.failed)]
    return report.summary() + "".join(f". {line}" for line in refused)
