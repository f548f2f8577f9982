"""The delivery queue against the real vendor sandboxes, over loopback, with a real store file.

Everything runs in the session reactor thread; the test thread stores messages, wakes the
queues and watches the store and the sandboxes' recordings. Retry delays are a few tens of
milliseconds so outages, throttling and dead letters take well under a second each.
"""

from __future__ import annotations

import logging
import os
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from courier_sandbox import DEFAULT_PORTS, start_sandboxes
from engine.channel.config import Destination as DestinationConfig
from engine.channel.config import RateLimit, Retry, StatusPolling
from engine.delivery import DeliveryQueue, Transition, idempotency_key
from engine.delivery.conversations import Conversations
from engine.delivery.pump import Pump
from engine.destinations import StaticToken
from engine.destinations.base import message_uuid
from engine.destinations.registry import destination_class
from engine.errors import StoreError
from engine.logs import loggable_error
from engine.mapping import load_mapping
from engine.message import Message
from engine.metrics import DestinationMetrics, Metrics
from engine.node import DEFAULT_LEASE_S
from engine.spec import parse
from engine.store import Cipher, Incoming, OutboxEntry, SQLiteStore
from engine.store.base import ERROR, QUEUED, SENDING, SENT, DeliverySelection
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS
from tests.support.waiting import wait_for
from tests.test_destinations_http import Reply, ScriptedServer

PDF = "JVBERi0xLjQKc2FuZGJveA=="
FAST_RETRY = Retry(max_attempts=20, initial_delay_s=0.05, max_delay_s=0.2, factor=2, jitter=0, max_age_s=60)
NO_POLLING = StatusPolling(poll=False, poll_every_s=60, give_up_after_s=3600)

MAPPINGS = {
    "conneqt": """
        schema = 1
        input = ["ORU^R01"]
        output = "conneqt"
        [fields]
        topic = { const = "PathologyResult" }
        recipientId = { path = "PD1-3.3", required = true }
        nhsNumber = { path = "PID-3.1", required = true }
        bodyContent = { template = "{OBR-4.2} report {OBR-3.1}" }
        [each.attachments]
        segment = "OBX"
        where = { "OBX-2" = "ED" }
        min = 1
          [each.attachments.fields]
          mimeType = { const = "application/pdf" }
          fileName = { template = "{OBR-3.1}.pdf" }
          content = { path = "OBX-5.5", required = true }
    """,
    "medallies": """
        schema = 1
        input = ["ORU^R01"]
        output = "medallies"
        [fields]
        toDirectAddress = { const = "smith@direct.example.org" }
        messageSubject = { template = "Report {OBR-3.1}" }
        [each.emailAttachmentList]
        segment = "OBX"
        where = { "OBX-2" = "ED" }
        min = 1
          [each.emailAttachmentList.fields]
          attachmentClass = { const = "application/pdf" }
          attachmentTitle = { const = "Report" }
          attachmentContent = { path = "OBX-5.5", required = true }
    """,
    "qliq": """
        schema = 1
        input = ["ORU^R01"]
        output = "qliq"
        [fields]
        to = { const = "nurse@sandbox.qliq" }
        subject = { template = "Report {OBR-3.1}" }
        text = { template = "{OBR-4.2} report {OBR-3.1} is ready" }
    """,
}
SETTINGS = {
    "conneqt": {"api_key": TEST_CREDENTIALS.conneqt_api_key},
    "medallies": {
        "username": "courier",
        "password": TEST_CREDENTIALS.medallies_password,
        "from_direct_address": "lab@direct.example.org",
    },
    "qliq": {"api_key": TEST_CREDENTIALS.qliq_api_key},
}


def oru(
    control_id: str, *, practice: str = "B86001", patient: str = "9434765919", order: str = "ORD1"
) -> bytes:
    return "\r".join(
        (
            f"MSH|^~\\&|LIS|LAB|COURIER|GP|20240315103000||ORU^R01|{control_id}|P|2.5.1",
            f"PID|1||{patient}^^^NHS^NH||DOE^JANE",
            f"PD1|||Moor Lane^^{practice}",
            f"ORC|RE|{order}",
            f"OBR|1|{order}|ACC-{control_id}|FBC^Full blood count",
            f"OBX|1|ED|PDF^Report||^AP^PDF^Base64^{PDF}",
        )
    ).encode()


class Transitions:
    """The test's TransitionListener: records every announced transition, and has each report
    one outbox entry named ``<control id>:<event>`` (``originals``: what it was built from)."""

    def __init__(self) -> None:
        self.seen: list[Transition] = []
        self.originals: dict[str, bytes] = {}

    def reports(self, transition: Transition, original: bytes) -> tuple[OutboxEntry, ...]:
        name = f"{transition.control_id}:{transition.event}"
        self.originals[name] = original
        return (OutboxEntry(transition.channel, "tcp:host=127.0.0.1:port=9", name, original),)

    def on_transition(self, transition: Transition) -> None:
        self.seen.append(transition)

    def events(self, delivery_id: int | None = None) -> list[str]:
        return [t.event for t in self.seen if delivery_id in (None, t.delivery_id)]


class QuotingTransitions(Transitions):
    """A listener that fails as a report built from the message can: with the patient's name
    and NHS number in the exception's text."""

    def reports(self, transition: Transition, original: bytes) -> tuple[OutboxEntry, ...]:
        message = Message.parse(original)
        raise ValueError(f"no report for {message.get('PID-5')} {message.get('PID-3.1')}")

    def on_transition(self, transition: Transition) -> None:
        raise KeyError(f"{transition.control_id} DOE^JANE 9434765919")


def reported(store) -> list[str]:
    """The control ids of the outbox, in the channel's order: what the transitions reported."""
    return [item.control_id for item in sorted(on_reactor(store.list_outbox), key=lambda i: i.seq)]


@pytest.fixture(scope="module")
def sandboxes(reactor):
    free_ports = dict.fromkeys(DEFAULT_PORTS, 0)
    started = on_reactor(start_sandboxes, reactor, credentials=TEST_CREDENTIALS, ports=free_ports)
    yield started
    on_reactor(started.stop)


@pytest.fixture
def store(reactor, tmp_path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(
        tmp_path / "engine.sqlite3", reactor=reactor, cipher=Cipher(os.urandom(32)), durability="normal"
    )
    on_reactor(opened.start)
    yield opened
    on_reactor(opened.close)


@pytest.fixture
def listener() -> Transitions:
    return Transitions()


class Harness:
    """Builds queues for one test and stops them afterwards."""

    def __init__(self, reactor, sandboxes, store, listener, tmp_path: Path) -> None:
        self.reactor, self.sandboxes, self.store, self.listener = reactor, sandboxes, store, listener
        self.tmp_path = tmp_path
        self.queues: list[DeliveryQueue] = []
        self.sessions: list[requests.Session] = []
        for sandbox in sandboxes:
            on_reactor(sandbox.reset)
            on_reactor(sandbox.set_faults, outage=None)

    def destination(self, kind: str, **settings: Any):
        table = {
            "base_url": self.sandboxes.base_urls()[kind],
            **SETTINGS[kind],
            "read_timeout_s": 5.0,
            **settings,
        }
        cls = destination_class(kind)
        parsed, problems = parse(cls.settings_spec, table, env={})
        assert problems == []
        session = requests.Session()
        self.sessions.append(session)
        destination = cls(parsed, session)
        if kind == "conneqt":
            destination.token_provider = StaticToken(
                destination.exchange_access_code(TEST_CREDENTIALS.conneqt_access_code)
            )
        return destination

    def config(self, kind: str, name: str | None = None, **changes: Any) -> DestinationConfig:
        base = DestinationConfig(
            name=name or kind,
            type=kind,
            mapping=Path(f"{kind}.toml"),
            settings={},
            retry=FAST_RETRY,
            rate_limit=RateLimit(None, 1),
            concurrency=1,
            status=NO_POLLING,
        )
        return replace(base, **changes)

    def queue(
        self,
        kind: str,
        *,
        name: str | None = None,
        destination=None,
        start: bool = True,
        conversations: bool = False,
        mapping: str | None = None,
        auth_retry_s: float = 60.0,
        metrics: DestinationMetrics | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        **changes: Any,
    ) -> DeliveryQueue:
        mapping_file = self.tmp_path / f"{kind}.toml"
        mapping_file.write_text(textwrap.dedent(MAPPINGS[kind] if mapping is None else mapping))
        config = self.config(kind, name, **changes)
        queue = DeliveryQueue(
            channel="lab",
            config=config,
            destination=destination or self.destination(kind),
            mapping=load_mapping(mapping_file),
            store=self.store,
            reactor=self.reactor,
            clock=self.reactor,
            listener=self.listener,
            idle_s=0.2,
            conversations=Conversations(self.store, "qliq") if conversations else None,
            auth_retry_s=auth_retry_s,
            metrics=metrics,
            lease_s=lease_s,
        )
        self.queues.append(queue)
        if start:
            on_reactor(queue.start)
        return queue

    def receive(self, raw: bytes, *destinations: str) -> int:
        message = Message.parse(raw)
        incoming = Incoming(
            channel="lab",
            raw=raw,
            sending_application="LIS",
            sending_facility="LAB",
            control_id=message.get("MSH-10"),
            message_type="ORU^R01",
            received_at=self.reactor.seconds(),
            peer="test",
            destinations=destinations,
        )
        receipt = on_reactor(self.store.receive, incoming)
        for queue in self.queues:
            on_reactor(queue.wake)
        return receipt.message_id

    def deliveries(self, destination: str, state: str | None = None):
        return on_reactor(self.store.list_deliveries, destination=destination, state=state, limit=500)

    def wait_states(self, destination: str, state: str, count: int, timeout: float = 10.0):
        return wait_for(
            lambda: len(self.deliveries(destination, state)) == count and self.deliveries(destination, state),
            timeout,
            f"{count} {state} at {destination}",
        )

    def close(self) -> None:
        for queue in self.queues:
            on_reactor(queue.stop)
        for session in self.sessions:
            session.close()


@pytest.fixture
def harness(reactor, sandboxes, store, listener, tmp_path) -> Iterator[Harness]:
    made = Harness(reactor, sandboxes, store, listener, tmp_path)
    yield made
    made.close()


def sent_bodies(sandbox, path_end: str) -> list[dict]:
    return [r.body for r in sandbox.state.requests if r.path.endswith(path_end) and r.method == "POST"]


# -- the tests -------------------------------------------------------------------------------


def test_stored_messages_are_mapped_from_the_store_sent_and_announced(harness, sandboxes, listener):
    harness.queue("medallies")
    ids = [harness.receive(oru(f"C{i}"), "medallies") for i in range(3)]
    sent = harness.wait_states("medallies", SENT, 3)
    assert len(sandboxes.medallies.state.messages) == 3
    for delivery in sent:
        expected = f"urn:uuid:{message_uuid(idempotency_key(delivery))}"
        assert delivery.remote_id == expected
        assert expected in sandboxes.medallies.state.messages
    accepted = [t for t in listener.seen if t.event == "accepted"]
    assert sorted(t.message_id for t in accepted) == sorted(ids)
    assert all(t.state == SENT and t.channel == "lab" and t.remote_id for t in accepted)
    assert sorted(reported(harness.store)) == ["C0:accepted", "C1:accepted", "C2:accepted"]
    subjects = sorted(b["messageSubject"] for b in sent_bodies(sandboxes.medallies, "send_ccda"))
    assert subjects == ["Report ACC-C0", "Report ACC-C1", "Report ACC-C2"]


def test_an_outage_queues_messages_and_all_arrive_once_the_vendor_is_back(harness, sandboxes):
    on_reactor(sandboxes.medallies.set_faults, outage="refuse", restore_after_s=1.5)
    harness.queue("medallies", concurrency=2)
    for i in range(4):
        harness.receive(oru(f"OUT{i}"), "medallies")
    sent = harness.wait_states("medallies", SENT, 4)
    assert len(sandboxes.medallies.state.messages) == 4
    assert max(d.attempts for d in sent) > 1  # they really were retried through the outage


def test_429_retry_after_is_honoured_between_attempts(harness, sandboxes):
    destination = harness.destination("conneqt")  # the token exchange is not throttled
    on_reactor(sandboxes.conneqt.set_faults, throttle_next=1, retry_after_s=1)
    harness.queue("conneqt", destination=destination)
    harness.receive(oru("T429"), "conneqt")
    (delivery,) = harness.wait_states("conneqt", SENT, 1)
    attempts = [r for r in sandboxes.conneqt.state.requests if r.path == "/api/v1/messages/instant"]
    assert [r.fault for r in attempts] == ["429", None]
    assert attempts[1].at - attempts[0].at >= 1.0  # backoff alone would be 0.05 s
    assert delivery.attempts == 2


def test_a_rejected_message_is_dead_lettered_and_the_ones_behind_it_still_go(harness, sandboxes, listener):
    harness.queue("conneqt")
    bad = harness.receive(oru("BAD", practice="UNKNOWN1"), "conneqt")
    harness.receive(oru("GOOD1"), "conneqt")
    harness.receive(oru("GOOD2"), "conneqt")
    harness.wait_states("conneqt", SENT, 2)
    (rejected,) = harness.wait_states("conneqt", ERROR, 1)
    assert rejected.message_id == bad and rejected.attempts == 1
    assert "Unknown Recipient" in rejected.last_error or "400" in rejected.last_error
    (transition,) = [t for t in listener.seen if t.state == ERROR]
    assert transition.event == "rejected"
    assert "BAD:rejected" in reported(harness.store), "stored with the ERROR"
    assert [p.name for p in transition.invalid_parameters] == ["recipient"]
    assert "DOE" not in transition.detail and "9434765919" not in transition.detail


def test_a_failing_listener_is_logged_by_type_without_the_patient_its_text_quotes(harness, caplog):
    harness.listener = QuotingTransitions()
    harness.queue("medallies")

    def both_failures() -> list[str] | None:
        lines = [r.getMessage() for r in caplog.records if r.name == "engine.delivery.transitions"]
        return lines if len(lines) == 2 else None

    with caplog.at_level(logging.ERROR, logger="engine.delivery.transitions"):
        harness.receive(oru("C1"), "medallies")
        (sent,) = harness.wait_states("medallies", SENT, 1)
        logged = wait_for(both_failures, what="the reports' and the announcement's failures logged")
    assert logged == [
        f"transition listener failed for delivery {sent.id} (medallies accepted): ValueError",
        f"transition listener failed for delivery {sent.id} (medallies accepted): KeyError",
    ]
    assert reported(harness.store) == [], "the change is stored without its report"
    for quoted in ("DOE", "JANE", "9434765919", "no report for"):
        assert quoted not in caplog.text


class QuotingMapping:
    """A mapping with a bug: it fails with a field of the message in the exception's text."""

    def apply(self, message: Message, context: dict[str, str]) -> dict[str, Any]:
        raise KeyError(message.get("PID-5"))


def test_a_delivery_left_sending_by_a_bug_is_logged_by_type_without_the_message(harness, caplog):
    queue = harness.queue("medallies", start=False)
    queue.mapping = QuotingMapping()
    with caplog.at_level(logging.ERROR, logger="engine.delivery.queue"):
        on_reactor(queue.start)
        harness.receive(oru("C1"), "medallies")
        (sending,) = harness.wait_states("medallies", SENDING, 1)
        wait_for(lambda: caplog.records, what="the failure logged")
    assert caplog.records[0].getMessage() == (
        f"queue medallies: delivery {sending.id} left SENDING (its lease runs out, then it is sent"
        " again): KeyError"
    )
    assert "DOE" not in caplog.text and "JANE" not in caplog.text


def test_a_failed_pump_step_is_logged_by_type_and_tried_again(caplog):
    clock = Clock()
    steps: list[float] = []

    def step() -> None:
        steps.append(clock.seconds())
        if len(steps) == 1:
            raise ValueError("PID|1||9434765919^^^NHS^NH||DOE^JANE")

    pump = Pump("queue medallies", clock, step, retry_after_error_s=5)
    with caplog.at_level(logging.ERROR, logger="engine.delivery.pump"):
        pump.start()
        clock.advance(0)
        clock.advance(5)
    assert steps == [0, 5]
    assert [r.getMessage() for r in caplog.records] == [
        "queue medallies: step failed, trying again in 5 s: ValueError"
    ]


def test_of_a_caught_exception_a_log_keeps_the_type_and_only_a_store_error_s_own_words():
    assert loggable_error(ValueError("PID|1||9434765919")) == "ValueError"
    locked = StoreError("store: database is locked")
    assert loggable_error(locked) == "StoreError: store: database is locked"


def test_a_slow_vendor_does_not_delay_another_vendors_deliveries(harness, sandboxes):
    on_reactor(sandboxes.medallies.set_faults, latency_s=3.0)
    harness.queue("medallies")
    harness.queue("qliq")
    started = time.monotonic()
    for i in range(3):
        harness.receive(oru(f"SLOW{i}"), "medallies", "qliq")
    harness.wait_states("qliq", SENT, 3, timeout=2.5)
    assert time.monotonic() - started < 2.5
    assert len(harness.deliveries("medallies", SENT)) == 0  # the slow one is still at its first


class RenewalsAnsweredLate:
    """The test's store, except that lease renewals wait for the test to answer them: as when
    a send's outcome is committed just before the renewal's UPDATE runs."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.renewals: list[tuple[list[int], float, Deferred]] = []

    def renew_leases(self, delivery_ids, until: float) -> Deferred:
        answer: Deferred = Deferred()
        self.renewals.append((list(delivery_ids), until, answer))
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_renewal_that_finds_the_send_already_recorded_is_no_lost_lease(harness, sandboxes, store, caplog):
    late = harness.store = RenewalsAnsweredLate(store)
    on_reactor(sandboxes.medallies.set_faults, latency_s=1.5)
    harness.queue("medallies", lease_s=3.0)  # renewed every second: once while the vendor waits
    harness.receive(oru("LATE1"), "medallies")
    wait_for(lambda: late.renewals, 5, "a renewal asked while the send is in flight")
    harness.wait_states("medallies", SENT, 1)
    ids, until, answer = late.renewals[0]
    with caplog.at_level(logging.ERROR):
        lost = on_reactor(store.renew_leases, ids, until)  # what the store answers now
        on_reactor(answer.callback, lost)
    on_reactor(sandboxes.medallies.set_faults, latency_s=0)
    assert lost == ids, "the store no longer finds it SENDING"
    assert "lease passed to another node" not in caplog.text, "a recorded send is no lost lease"


def test_max_attempts_dead_letters_with_the_same_message_id_on_every_attempt(harness, sandboxes, listener):
    on_reactor(sandboxes.medallies.set_faults, outage="503")
    harness.queue("medallies", retry=replace(FAST_RETRY, max_attempts=3))
    harness.receive(oru("DEAD"), "medallies")
    (dead,) = harness.wait_states("medallies", ERROR, 1)
    assert dead.attempts == 3 and "3 attempts" in dead.last_error and "503" in dead.last_error
    ids = {b["messageId"] for b in sent_bodies(sandboxes.medallies, "send_ccda")}
    assert len(sent_bodies(sandboxes.medallies, "send_ccda")) == 3 and len(ids) == 1
    assert listener.events() == ["dead_letter"]


def test_max_age_dead_letters_a_delivery_that_keeps_failing(harness, sandboxes):
    on_reactor(sandboxes.medallies.set_faults, outage="503")
    harness.queue("medallies", retry=replace(FAST_RETRY, max_attempts=1000, max_age_s=0.3))
    harness.receive(oru("OLD"), "medallies")
    (dead,) = harness.wait_states("medallies", ERROR, 1)
    assert "max_age_s" in dead.last_error and dead.attempts > 1


def test_a_requeued_delivery_gets_a_fresh_max_age(harness, sandboxes, store):
    on_reactor(sandboxes.medallies.set_faults, outage="503")
    harness.queue("medallies", retry=replace(FAST_RETRY, max_attempts=1000, max_age_s=0.3))
    harness.receive(oru("AGAIN"), "medallies")
    (dead,) = harness.wait_states("medallies", ERROR, 1)
    on_reactor(sandboxes.medallies.set_faults, outage=None, fail_next=1)  # back, one more failure
    on_reactor(store.requeue, DeliverySelection(ids=(dead.id,)))
    for queue in harness.queues:
        on_reactor(queue.wake)
    (sent,) = harness.wait_states("medallies", SENT, 1)
    assert sent.attempts == 2, "the failure after the requeue was retried, not dead-lettered"


def test_a_crash_after_the_vendor_accepted_resends_with_the_same_id_and_the_vendor_dedups(
    harness, sandboxes, store, reactor
):
    destination = harness.destination("medallies")
    harness.receive(oru("CRASH"), "medallies")
    # The "previous run": claimed with a short lease, sent, then died before mark_sent.
    (claimed,) = on_reactor(store.claim_due, "medallies", reactor.seconds(), 1, 0.05)
    mapping_file = harness.tmp_path / "m.toml"
    mapping_file.write_text(textwrap.dedent(MAPPINGS["medallies"]))
    payload = load_mapping(mapping_file).apply(Message.parse(claimed.raw), context={})
    first = destination.send(payload, idempotency_key=idempotency_key(claimed))
    assert harness.deliveries("medallies", SENDING)
    time.sleep(0.1)  # the lease runs out
    harness.queue("medallies", destination=destination)  # start-up recovers the lease
    (delivery,) = harness.wait_states("medallies", SENT, 1)
    assert delivery.remote_id == first.remote_id
    assert len(sandboxes.medallies.state.messages) == 1
    assert sandboxes.medallies.state.duplicates[first.remote_id] == 1
    kinds = [e.kind for e in on_reactor(store.timeline, "CRASH")]
    assert "lease_expired" in kinds and kinds[-1] == "sent"


def test_auth_failure_keeps_the_delivery_queued_without_counting_and_tells_the_operator(
    harness, sandboxes, caplog
):
    destination = harness.destination("conneqt")
    destination.token_provider = StaticToken("not-a-token")
    harness.queue("conneqt", destination=destination)
    with caplog.at_level(logging.ERROR, logger="engine.delivery.queue"):
        harness.receive(oru("AUTH"), "conneqt")
        wait_for(lambda: any("AccessToken" in r.getMessage() for r in caplog.records), what="log line")
    (delivery,) = harness.deliveries("conneqt", QUEUED)
    assert delivery.attempts == 0 and delivery.next_attempt_at > time.time() + 30
    assert "exchange a new access code" in caplog.records[-1].getMessage()
    assert [e.kind for e in on_reactor(harness.store.timeline, "AUTH")][-1] == "held:auth"


def test_a_wrong_endpoint_holds_the_queue_and_it_resumes_when_the_endpoint_works(harness, caplog):
    """Qliq's 404 ("Check your URL") is the base URL's fault: no attempt counted, no AR sent,
    the operator told, and the queue probes again by itself."""
    vendor = ScriptedServer()
    try:
        vendor.reply(
            Reply(404, {"message": "Check your URL"}),
            Reply(
                202, {"status": "Message queued for delivery", "conversation_id": "c1", "message_id": "m1"}
            ),
        )
        harness.queue(
            "qliq", destination=harness.destination("qliq", base_url=vendor.base_url), auth_retry_s=1.0
        )
        with caplog.at_level(logging.ERROR, logger="engine.delivery.queue"):
            harness.receive(oru("HELD"), "qliq")
            wait_for(
                lambda: any("held (endpoint not found)" in r.getMessage() for r in caplog.records), what="log"
            )
        (queued,) = harness.deliveries("qliq", QUEUED)
        assert queued.attempts == 0
        assert [e.kind for e in on_reactor(harness.store.timeline, "HELD")][-1] == "held:endpoint not found"
        (sent,) = harness.wait_states("qliq", SENT, 1)
        assert sent.attempts == 1 and len(vendor.received) == 2
        assert "error" not in [e.kind for e in on_reactor(harness.store.timeline, "HELD")]
    finally:
        vendor.close()


def test_the_queue_counts_each_answer_and_shows_the_hold_with_its_fixed_reason(harness):
    """404 holds (reason ``endpoint``), 503 is retried, 202 sends; then a 400 dead-letters."""
    vendor = ScriptedServer()
    metrics = Metrics()

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"channel": "lab", "destination": "qliq", **labels})

    try:
        queued = {"status": "Message queued for delivery", "conversation_id": "c1", "message_id": "m1"}
        vendor.reply(
            Reply(404, {"message": "Check your URL"}),
            Reply(503, {"message": "busy"}),
            Reply(202, queued),
            Reply(400, {"message": "Invalid recipient"}),
        )
        destination = harness.destination("qliq", base_url=vendor.base_url)
        harness.queue(
            "qliq", destination=destination, auth_retry_s=1.0, metrics=metrics.destination("lab", "qliq")
        )
        harness.receive(oru("M1"), "qliq")
        wait_for(lambda: sample("courier_destination_held", reason="endpoint") == 1, what="held")
        assert sample("courier_destination_held", reason="other") == 0
        harness.wait_states("qliq", SENT, 1)
        assert sample("courier_destination_held", reason="endpoint") == 0
        harness.receive(oru("M2"), "qliq")
        harness.wait_states("qliq", ERROR, 1)
        counted = {
            name: sample(f"courier_deliveries_{name}_total") for name in ("sent", "failed", "dead_lettered")
        }
        assert counted == {"sent": 1, "failed": 2, "dead_lettered": 1}
        answers = {c: sample("courier_vendor_responses_total", **{"class": c}) for c in ("2xx", "4xx", "5xx")}
        assert answers == {"2xx": 1, "4xx": 2, "5xx": 1}
        assert sample("courier_send_seconds_count") == 4
    finally:
        vendor.close()


def test_qliq_follow_ups_for_the_same_patient_and_order_join_one_conversation(harness, sandboxes):
    harness.queue("qliq", conversations=True)
    harness.receive(oru("Q1", order="ORD9"), "qliq")
    harness.wait_states("qliq", SENT, 1)
    harness.receive(oru("Q2", order="ORD9"), "qliq")
    harness.receive(oru("Q3", order="OTHER"), "qliq")
    harness.wait_states("qliq", SENT, 3)
    bodies = sent_bodies(sandboxes.qliq, "/secure_messages/send")
    conversation = next(iter(sandboxes.qliq.state.messages.values()))["conversation_id"]
    assert "conversation_id" not in bodies[0]
    assert bodies[1]["conversation_id"] == conversation
    assert "conversation_id" not in bodies[2]


QLIQ_WITH_ATTACHMENTS = (
    MAPPINGS["qliq"]
    + """
        [each.attachments]
        segment = "OBX"
        where = { "OBX-2" = "ED" }
          [each.attachments.fields]
          content_type = { const = "application/pdf" }
          file_name = { template = "Report {OBX-1}.pdf" }
          base64 = { path = "OBX-5.5", required = true }
"""
)


def test_after_a_failed_qliq_follow_up_and_a_restart_only_the_follow_up_is_sent(harness, sandboxes, store):
    """Qliq has no idempotency key: the progress is stored with the delivery, not in memory."""
    two_reports = oru("PART") + f"\rOBX|2|ED|PDF^Report||^AP^PDF^Base64^{PDF}".encode()
    on_reactor(sandboxes.qliq.set_faults, pass_next=1, fail_next=1)  # the follow-up fails once
    slow_retry = replace(FAST_RETRY, initial_delay_s=0.5, max_delay_s=0.5)
    first_run = harness.queue("qliq", mapping=QLIQ_WITH_ATTACHMENTS, retry=slow_retry)
    harness.receive(two_reports, "qliq")

    def failed_once():
        return [d for d in harness.deliveries("qliq", QUEUED) if d.attempts == 1]

    wait_for(failed_once, what="a failed attempt")
    on_reactor(first_run.stop)  # the engine stops before the retry
    (waiting,) = harness.deliveries("qliq", QUEUED)
    assert waiting.progress and "PART" not in waiting.progress
    assert "request 2 of 2: HTTP 500" in waiting.last_error

    harness.queue("qliq", mapping=QLIQ_WITH_ATTACHMENTS)  # the restarted engine
    (sent,) = harness.wait_states("qliq", SENT, 1)

    bodies = sent_bodies(sandboxes.qliq, "/secure_messages/send")
    assert [b["attachment"]["file_name"] for b in bodies] == ["Report 1.pdf", "Report 2.pdf", "Report 2.pdf"]
    first, follow_up = sandboxes.qliq.state.messages.values()  # the message, then its follow-up
    assert sent.remote_id == first["message_id"] and sent.progress is None
    assert follow_up["conversation_id"] == first["conversation_id"] == bodies[2]["conversation_id"]


def test_a_queue_stopped_while_starting_never_claims(harness, sandboxes, reactor):
    harness.receive(oru("STOPPED"), "medallies")
    queue = harness.queue("medallies", start=False)

    def start_then_stop():
        queue.start()  # the store has not answered yet when stop() comes
        return queue.stop()

    on_reactor(start_then_stop)
    time.sleep(0.5)
    (delivery,) = harness.deliveries("medallies")
    assert (delivery.state, delivery.attempts) == (QUEUED, 0)
    assert not sent_bodies(sandboxes.medallies, "send_ccda")


def test_the_rate_limit_spaces_sends(harness, sandboxes):
    harness.queue("qliq", rate_limit=RateLimit(per_second=10, burst=1), concurrency=4)
    for i in range(4):
        harness.receive(oru(f"R{i}", order=f"O{i}"), "qliq")
    harness.wait_states("qliq", SENT, 4)
    times = [r.at for r in sandboxes.qliq.state.requests if r.path == "/secure_messages/send"]
    assert times[-1] - times[0] >= 0.25  # 4 sends at 10/s with a burst of 1: at least 0.3 s
