"""Status tracking after SENT, against the sandboxes: polls drive DELIVERED, READ, failed, expired.

MedAllies and Qliq poll every 0.1 s on the real clock; conneQt polls at most four times a day,
so its poller runs on a ``task.Clock`` advanced six hours at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock

from engine.channel.config import StatusPolling
from engine.delivery import StatusPoller, StatusTracker
from engine.destinations.base import StatusUpdate
from engine.destinations.conneqt.polling import MIN_POLL_INTERVAL_S as CONNEQT_MIN_INTERVAL_S
from engine.store.base import DELIVERED, ERROR, READ, SENT
from tests import test_delivery_queue as queue_tests
from tests.conftest import on_reactor
from tests.support.scripted_http import Reply, ScriptedServer
from tests.test_delivery_queue import Harness, Transitions, oru, reported, wait_for

# The queue tests' fixtures: sandboxes on free ports, a store file, a listener, a harness.
sandboxes = queue_tests.sandboxes
store = queue_tests.store
listener = queue_tests.listener
harness = queue_tests.harness

QUICK_POLLING = StatusPolling(poll=True, poll_every_s=0.1, give_up_after_s=30)


class Pollers:
    def __init__(self, harness: Harness, listener: Transitions) -> None:
        self.harness = harness
        self.tracker = StatusTracker(harness.store, harness.reactor, listener)
        self.started: list[StatusPoller] = []

    def start(self, queue, clock=None) -> StatusPoller:
        self.tracker.track(queue.name)
        poller = StatusPoller(
            config=queue.config,
            destination=queue.destination,
            store=self.harness.store,
            tracker=self.tracker,
            reactor=self.harness.reactor,
            clock=clock or self.harness.reactor,
            idle_s=0.1,
        )
        on_reactor(poller.start)
        self.started.append(poller)
        return poller

    def stop(self) -> None:
        for poller in self.started:
            on_reactor(poller.stop)


@pytest.fixture
def pollers(harness, listener) -> Iterator[Pollers]:
    made = Pollers(harness, listener)
    yield made
    made.stop()


def state_of(harness: Harness, destination: str) -> str:
    (delivery,) = harness.deliveries(destination)
    return delivery.state


def test_medallies_polls_until_dispatched_and_a_pushed_displayed_upgrades_it(
    harness, pollers, sandboxes, listener, store
):
    on_reactor(sandboxes.medallies.configure, {"processed_after_s": 0.05, "dispatched_after_s": 0.2})
    queue = harness.queue("medallies", status=QUICK_POLLING)
    harness.receive(oru("MA1"), "medallies")
    (sent,) = harness.wait_states("medallies", SENT, 1)
    pollers.start(queue)  # started after SENT: the schedule was waiting in the store
    wait_for(lambda: state_of(harness, "medallies") == DELIVERED, what="DELIVERED")
    wait_for(lambda: on_reactor(store.next_status_poll_due, "medallies") is None, what="polling to end")
    assert listener.events() == ["accepted", "delivered"]
    delivered = listener.seen[-1]
    assert delivered.state == DELIVERED and delivered.remote_id == sent.remote_id
    assert "DISPATCHED" in delivered.detail

    tracker = pollers.tracker
    assert on_reactor(tracker.apply_update, sent.remote_id, StatusUpdate("failed", detail="FAILED")) is None
    read = on_reactor(tracker.apply_update, sent.remote_id, StatusUpdate("read", detail="DISPLAYED"))
    assert (read.state, read.event, read.delivery_id) == (READ, "read", sent.id)
    assert state_of(harness, "medallies") == READ
    kinds = [(e.kind, e.state) for e in on_reactor(store.timeline, "MA1")]
    assert kinds[-2:] == [("status", DELIVERED), ("status", READ)]


def test_read_before_delivered_reports_delivered_first_and_the_late_delivered_changes_nothing(
    harness, pollers, listener, store
):
    """DSNs are separate HTTP posts and may arrive out of order; a poll may miss a step."""
    harness.queue("medallies")
    harness.receive(oru("MA2"), "medallies")
    (sent,) = harness.wait_states("medallies", SENT, 1)
    tracker = pollers.tracker
    tracker.track("medallies")

    read = on_reactor(tracker.apply_update, sent.remote_id, StatusUpdate("read", detail="DISPLAYED"))
    assert (read.state, read.event) == (READ, "read")
    assert listener.events() == ["accepted", "delivered", "read"]
    assert listener.seen[1].detail == "delivered (implied by read)"
    assert reported(store) == ["MA2:accepted", "MA2:delivered", "MA2:read"], "stored with each change"
    assert listener.originals["MA2:read"] == oru("MA2"), "built from the stored message"
    late = on_reactor(tracker.apply_update, sent.remote_id, StatusUpdate("delivered", detail="DISPATCHED"))
    assert late is None and listener.events() == ["accepted", "delivered", "read"]
    kinds = [(e.kind, e.state) for e in on_reactor(store.timeline, "MA2")]
    assert kinds[-2:] == [("status", DELIVERED), ("status", READ)]


def test_a_status_pushed_before_the_send_is_recorded_waits_for_it(harness, pollers, store):
    """A vendor's webhook can beat our COMMIT of its HTTP answer: the status is not lost."""
    harness.receive(oru("EARLY"), "medallies")  # no queue runs: the test plays the sender
    tracker = pollers.tracker
    tracker.track("medallies")
    pushed: list[object] = []
    webhook = threading.Thread(
        target=lambda: pushed.append(
            on_reactor(tracker.apply_update, "urn:uuid:early", StatusUpdate("delivered", detail="DISPATCHED"))
        )
    )
    webhook.start()
    time.sleep(0.4)  # the status is waiting; now the send's answer is committed
    (claimed,) = on_reactor(store.claim_due, "medallies", time.time(), 1, 30.0)
    on_reactor(store.mark_sent, claimed.id, "urn:uuid:early", "accepted by medallies")
    webhook.join(10)
    (transition,) = pushed
    assert (transition.state, transition.delivery_id) == (DELIVERED, claimed.id)
    assert state_of(harness, "medallies") == DELIVERED


def test_qliq_polls_drive_delivered_then_read(harness, pollers, sandboxes, listener, store):
    on_reactor(
        sandboxes.qliq.configure, {"delivered_after_s": 0.1, "read_after_s": 0.4, "recipient_stagger_s": 0}
    )
    queue = harness.queue("qliq", status=QUICK_POLLING)
    pollers.start(queue)
    harness.receive(oru("QL1"), "qliq")
    wait_for(lambda: state_of(harness, "qliq") == READ, what="READ")
    assert listener.events() == ["accepted", "delivered", "read"]
    assert listener.seen[-1].recipient == "nurse@sandbox.qliq"
    wait_for(lambda: on_reactor(store.next_status_poll_due, "qliq") is None, what="polling to end")


def test_conneqt_failed_and_expired_become_error_on_the_four_a_day_schedule(
    harness, pollers, sandboxes, listener
):
    on_reactor(sandboxes.conneqt.configure, {"completed_after_s": None})
    clock = Clock()
    clock.advance(time.time())
    queue = harness.queue(
        "conneqt", status=StatusPolling(poll=True, poll_every_s=60, give_up_after_s=3 * 86400)
    )
    harness.receive(oru("CQ1"), "conneqt")
    harness.receive(oru("CQ2"), "conneqt")
    first, second = sorted(harness.wait_states("conneqt", SENT, 2), key=lambda d: d.id)
    on_reactor(sandboxes.conneqt.force_status, first.remote_id, {"status": "REJECTED"})
    on_reactor(sandboxes.conneqt.force_status, second.remote_id, {"status": "EXPIRED"})
    pollers.start(queue, clock)
    on_reactor(clock.advance, 60)
    time.sleep(0.2)
    assert sandboxes.conneqt.state.status_polls == {}  # nothing polled before six hours
    on_reactor(clock.advance, CONNEQT_MIN_INTERVAL_S)

    def both_errors():
        on_reactor(clock.advance, 1)
        return len(harness.deliveries("conneqt", ERROR)) == 2

    wait_for(both_errors, what="two ERROR deliveries")
    by_id = {t.delivery_id: t for t in listener.seen if t.state == ERROR}
    assert (by_id[first.id].event, by_id[second.id].event) == ("failed", "expired")
    assert dict(sandboxes.conneqt.state.status_polls) == {first.remote_id: 1, second.remote_id: 1}


def test_a_failed_status_query_is_logged_without_the_vendor_s_words(harness, pollers, caplog):
    """A vendor's error text can quote the message it is about: the log names the type only."""
    queue = harness.queue("medallies", status=QUICK_POLLING)
    harness.receive(oru("MA1"), "medallies")
    (sent,) = harness.wait_states("medallies", SENT, 1)
    on_reactor(queue.stop)
    vendor = ScriptedServer()
    vendor.reply(*[Reply(500, {"message": "no such message for DOE^JANE 9434765919"})] * 50)
    failing = harness.queue(
        "medallies",
        start=False,
        status=QUICK_POLLING,
        destination=harness.destination("medallies", base_url=vendor.base_url),
    )
    try:
        with caplog.at_level(logging.WARNING, logger="engine.delivery.poller"):
            pollers.start(failing)
            wait_for(lambda: caplog.records, what="a failed query logged")
    finally:
        pollers.stop()
        vendor.close()
    assert vendor.received, "the query reached the vendor"
    assert caplog.records[0].getMessage() == (
        f"status poller medallies: query for delivery {sent.id} failed: DestinationError"
    )
    for quoted in ("DOE", "9434765919", "no such message", "HTTP 500"):
        assert quoted not in caplog.text
