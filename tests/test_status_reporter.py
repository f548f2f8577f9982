"""The status reporter over real sockets: durable outbox, order, retries, restarts, none twice.

Also home of the helpers the other ``test_status_*`` modules share: a store in tmp_path, the
hospital's MLLP listener and a channel pointed at it.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, succeed

from courier_sandbox.certs import make_certificates
from engine.channel.config import Channel, ClientTls, StatusReports, parse_channel
from engine.commands.run import with_sandbox_secrets
from engine.delivery.transitions import Transition
from engine.message import Message
from engine.mllp.server import MLLPServerFactory, Reply
from engine.status.reporter import Backoff, NotAcknowledged, StatusReporter, check_acknowledgement
from engine.store import Cipher, Incoming, SQLiteStore
from engine.tls import TLSSettings, wrap_server_factory
from tests.conftest import on_reactor
from tests.support.hospital import Hospital
from tests.support.sandbox import TEST_CREDENTIALS
from tests.support.subprocess_engine import free_port
from tests.support.waiting import wait_for

CHANNELS = Path(__file__).resolve().parent.parent / "channels"
ORU = (
    b"MSH|^~\\&|LIS|LAB|COURIER|HOSP|20240131120000+0000||ORU^R01^ORU_R01|LAB0001|P|2.5.1\r"
    b"PID|1||123^^^HOSP^MR||DOE^JANE\rOBR|1||F1|CBC\r"
)
FAST = {"backoff": Backoff(initial_s=0.05, max_s=0.2), "idle_poll_s": 0.2}


# -- shared helpers -------------------------------------------------------------------------


def open_store(path: Path, key: bytes, reactor) -> SQLiteStore:
    store = SQLiteStore(path, reactor=reactor, cipher=Cipher(key), durability="normal")
    on_reactor(store.start)
    return store


@contextmanager
def temporary_store(tmp_path: Path, reactor) -> Iterator[SQLiteStore]:
    """A started store in a fresh file under tmp_path, closed afterwards."""
    store = open_store(tmp_path / "courier.sqlite3", os.urandom(32), reactor)
    try:
        yield store
    finally:
        on_reactor(store.close)


def channel_file(name: str, port: int, events=("accepted", "delivered", "read", "failed")) -> Channel:
    """An example channel whose status reports go to the test hospital on ``port``; its secret
    variables take the test credentials, as ``courier run --sandbox`` fills them."""
    path = CHANNELS / name
    env = with_sandbox_secrets([path], TEST_CREDENTIALS, env={})
    channel, problems = parse_channel(path, path.read_text(), env=env)
    assert not problems
    reports = StatusReports(
        to=f"tcp:host=127.0.0.1:port={port}",
        events=tuple(events),
        connect_timeout_s=1.0,
        ack_timeout_s=1.0,
        tls=None,
    )
    return replace(channel, status_reports=reports)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def store(tmp_path, reactor):
    with temporary_store(tmp_path, reactor) as store:
        yield store


def receive(store, channel: Channel, raw: bytes = ORU, destinations: tuple[str, ...] = ()) -> int:
    """Store ``raw`` as the source would (with QUEUED deliveries to ``destinations``)."""
    incoming = Incoming(
        channel=channel.name,
        raw=raw,
        sending_application="LIS",
        sending_facility="LAB",
        control_id=Message.parse(raw).control_id,
        message_type="ORU^R01",
        received_at=time.time(),
        peer="127.0.0.1",
        destinations=destinations,
    )
    return on_reactor(store.receive, incoming).message_id


def transition(channel: Channel, message_id: int, event: str, state: str, n: int = 0) -> Transition:
    return Transition(
        delivery_id=1,
        message_id=message_id,
        channel=channel.name,
        destination=channel.destinations[0].name,
        control_id="LAB0001",
        state=state,
        event=event,
        at=1706711101.0 + n,
        remote_id="v-1",
        recipient="gp@example.org",
        detail="HTTP 400" if state == "ERROR" else "",
    )


EVENTS = [
    ("accepted", "SENT"),
    ("delivered", "DELIVERED"),
    ("read", "READ"),
    ("failed", "ERROR"),
    ("expired", "ERROR"),
]


def report(store, reporter: StatusReporter, transition: Transition) -> None:
    """What the delivery queue does with a transition of a message of ``ORU``: store the
    reporter's reports (the queue stores them with the state change), then announce it."""
    for entry in on_reactor(reporter.reports, transition, ORU):
        on_reactor(store.outbox_add, entry.channel, entry.target, entry.payload, entry.control_id)
    on_reactor(reporter.on_transition, transition)


def start_reporter(store, reactor, channel: Channel) -> StatusReporter:
    reporter = StatusReporter(store, reactor, [channel], **FAST)
    on_reactor(reporter.start)
    return reporter


# -- tests ----------------------------------------------------------------------------------


def test_statuses_arrive_in_order_with_msa2_and_zds(store, reactor):
    hospital = Hospital(reactor).up()
    channel = channel_file("lis_oru_to_conneqt.toml", hospital.port)
    message_id = receive(store, channel)
    reporter = start_reporter(store, reactor, channel)
    try:
        for n, (event, state) in enumerate(EVENTS):
            report(store, reporter, transition(channel, message_id, event, state, n))
        got = [hospital.next() for _ in EVENTS]
        assert [m.get("ZDS-1") for m in got] == [event for event, _ in EVENTS]
        assert [m.get("MSA-1") for m in got] == ["AA", "AA", "AA", "AE", "AE"]
        assert {m.get("MSA-2") for m in got} == {"LAB0001"}
        assert [m.get("ZDS-7") for m in got] == [state for _, state in EVENTS]
        assert {(m.get("ZDS-3"), m.get("ZDS-4"), m.get("ZDS-5")) for m in got} == {
            (channel.destinations[0].name, "conneqt", "v-1")
        }
        assert got[0].get("ZDS-2") == "20240131142501+0000"
        assert "HTTP 400" in got[3].get("ERR-8")
        wait_for(lambda: on_reactor(store.outbox_next, channel.name, time.time() + 3600) is None)
        assert hospital.nothing_more()
    finally:
        on_reactor(reporter.stop)
        hospital.down()


def test_only_the_channels_events_are_queued(store, reactor):
    hospital = Hospital(reactor).up()
    channel = channel_file("lis_oru_to_conneqt.toml", hospital.port, events=("delivered", "failed"))
    message_id = receive(store, channel)
    reporter = start_reporter(store, reactor, channel)
    try:
        for n, (event, state) in enumerate(EVENTS):
            report(store, reporter, transition(channel, message_id, event, state, n))
        assert [hospital.next().get("ZDS-1") for _ in range(3)] == ["delivered", "failed", "expired"]
        assert hospital.nothing_more()
    finally:
        on_reactor(reporter.stop)
        hospital.down()


def test_retries_while_the_hospital_is_down_and_sends_each_once(store, reactor):
    port = free_port()
    channel = channel_file("lis_oru_to_conneqt.toml", port)
    message_id = receive(store, channel)
    reporter = start_reporter(store, reactor, channel)
    hospital = Hospital(reactor, port)
    try:
        for n, (event, state) in enumerate(EVENTS[:3]):
            report(store, reporter, transition(channel, message_id, event, state, n))
        wait_for(lambda: on_reactor(store.outbox_next, channel.name, time.time() + 3600).attempts >= 2)
        hospital.up()
        assert [hospital.next().get("ZDS-1") for _ in range(3)] == ["accepted", "delivered", "read"]
        assert hospital.nothing_more(wait=1.0)
    finally:
        on_reactor(reporter.stop)
        hospital.down()


def test_pending_items_are_sent_after_a_restart(tmp_path, key, reactor):
    path = tmp_path / "courier.sqlite3"
    port = free_port()
    channel = channel_file("lis_oru_to_conneqt.toml", port)
    store = open_store(path, key, reactor)
    message_id = receive(store, channel)
    reporter = start_reporter(store, reactor, channel)
    for n, (event, state) in enumerate(EVENTS[:2]):
        report(store, reporter, transition(channel, message_id, event, state, n))
    on_reactor(reporter.stop)
    on_reactor(store.close)

    hospital = Hospital(reactor, port).up()
    store = open_store(path, key, reactor)
    reporter = start_reporter(store, reactor, channel)
    try:
        assert [hospital.next().get("ZDS-1") for _ in range(2)] == ["accepted", "delivered"]
        assert hospital.nothing_more(wait=1.0)
    finally:
        on_reactor(reporter.stop)
        on_reactor(store.close)
        hospital.down()


class WrongControlIdReceiver:
    """A broken peer that acknowledges every message with someone else's control id."""

    def __init__(self) -> None:
        self.frames = 0

    def handle_frame(self, payload: bytes, peer: str) -> Deferred[Reply]:
        self.frames += 1
        return succeed(Reply(b"MSH|^~\\&|H|H|C|C|20240101000000||ACK|X1|P|2.5.1\rMSA|CA|NOT-OURS\r"))

    def refuse_oversize(self, head: bytes, peer: str) -> None:
        return None


def test_an_ack_for_another_message_is_not_taken_as_delivery(store, reactor):
    receiver = WrongControlIdReceiver()
    hospital = Hospital(reactor, receiver=receiver).up()
    channel = channel_file("lis_oru_to_conneqt.toml", hospital.port)
    message_id = receive(store, channel)
    reporter = start_reporter(store, reactor, channel)
    try:
        report(store, reporter, transition(channel, message_id, "delivered", "DELIVERED"))
        wait_for(lambda: receiver.frames >= 2)
        item = on_reactor(store.outbox_next, channel.name, time.time() + 3600)
        assert item is not None and item.attempts >= 1
    finally:
        on_reactor(reporter.stop)
        hospital.down()


class RefusingTheFirst:
    """A hospital listener that answers AE, forever, to the first status message it sees."""

    def __init__(self, receiver) -> None:
        self.receiver = receiver
        self.refused: str | None = None
        self.refusals = 0

    def handle_frame(self, payload: bytes, peer: str) -> Deferred[Reply]:
        control_id = Message.parse(payload).control_id
        if self.refused in (None, control_id):
            self.refused = control_id
            self.refusals += 1
            nak = f"MSH|^~\\&|H|H|C|C|20240101000000||ACK|X1|P|2.5.1\rMSA|AE|{control_id}\r"
            return succeed(Reply(nak.encode()))
        return self.receiver.handle_frame(payload, peer)

    def refuse_oversize(self, head: bytes, peer: str) -> None:
        return None


def test_an_operator_skips_a_refused_status_and_the_channel_moves_on(tmp_path, key, reactor):
    hospital = Hospital(reactor)
    refusing = hospital.receiver = RefusingTheFirst(hospital.receiver)
    hospital.up()
    channel = channel_file("lis_oru_to_conneqt.toml", hospital.port)
    path = tmp_path / "courier.sqlite3"
    store = open_store(path, key, reactor)
    reporter = start_reporter(store, reactor, channel)
    try:
        message_id = receive(store, channel)
        for n, (event, state) in enumerate(EVENTS[:2]):
            report(store, reporter, transition(channel, message_id, event, state, n))
        wait_for(lambda: refusing.refusals >= 3)
        assert hospital.nothing_more(wait=0.5), "the later status waits behind the refused one"

        head = on_reactor(store.outbox_next, channel.name, time.time() + 3600)
        skipped = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine",
                "outbox",
                "skip",
                str(head.id),
                "--reason",
                "listener rejects it",
            ]
            + ["--store", str(path)],
            capture_output=True,
            text=True,
            env=dict(os.environ, COURIER_STORE_KEY=base64.b64encode(key).decode()),
            timeout=60,
        )
        assert skipped.returncode == 0, skipped.stderr

        assert hospital.next().get("ZDS-1") == "delivered"
        wait_for(lambda: on_reactor(store.outbox_next, channel.name, time.time() + 3600) is None)
    finally:
        on_reactor(reporter.stop)
        on_reactor(store.close)
        hospital.down()


@pytest.mark.parametrize(
    ("reply", "accepted"),
    [
        (b"MSH|^~\\&|H|H|C|C|1||ACK|X|P|2.5\rMSA|CA|S1\r", True),
        (b"MSH|^~\\&|H|H|C|C|1||ACK|X|P|2.5\rMSA|AA|S1\r", True),
        (b"MSH|^~\\&|H|H|C|C|1||ACK|X|P|2.5\rMSA|AE|S1\r", False),
        (b"MSH|^~\\&|H|H|C|C|1||ACK|X|P|2.5\rMSA|CA|S2\r", False),
        (b"MSH|^~\\&|H|H|C|C|1||ACK|X|P|2.5\r", False),
        (b"not hl7", False),
    ],
)
def test_check_acknowledgement(reply, accepted):
    if accepted:
        check_acknowledgement(reply, "S1")
    else:
        with pytest.raises(NotAcknowledged):
            check_acknowledgement(reply, "S1")


def test_statuses_go_over_tls_when_the_channel_says_so(store, reactor, tmp_path):
    certs = make_certificates(tmp_path / "certs")
    hospital = Hospital(reactor)
    factory = wrap_server_factory(
        MLLPServerFactory("hospital", hospital.receiver, reactor),
        TLSSettings(cert_file=certs.server_cert, key_file=certs.server_key),
    )
    listening = on_reactor(reactor.listenTCP, 0, factory, interface="127.0.0.1")
    channel = channel_file("lis_oru_to_conneqt.toml", listening.getHost().port)
    reports = replace(
        channel.status_reports,
        to=channel.status_reports.to.replace("127.0.0.1", "localhost"),
        tls=ClientTls(ca_file=certs.ca_cert, cert_file=None, key_file=None),
    )
    channel = replace(channel, status_reports=reports)
    message_id = receive(store, channel)
    reporter = start_reporter(store, reactor, channel)
    try:
        report(store, reporter, transition(channel, message_id, "read", "READ"))
        assert hospital.next().get("ZDS-1") == "read"
    finally:
        on_reactor(reporter.stop)
        on_reactor(listening.stopListening)


def test_stopping_starts_no_exchange_with_a_hospital_that_does_not_answer(store, reactor):
    """A stop that comes while the outbox is being read must not begin an exchange: with a
    hospital that accepts and never ACKs, the stop would wait the whole ack_timeout_s."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody answers
        channel = channel_file("lis_oru_to_conneqt.toml", silent.getsockname()[1])
        channel = replace(channel, status_reports=replace(channel.status_reports, ack_timeout_s=30.0))
        reporter = StatusReporter(store, reactor, [channel], **FAST)
        on_reactor(reporter.enqueue, channel.name, ORU, "LAB0001")  # an item waiting in the outbox

        def start_then_stop() -> Deferred:
            reporter.start()  # reads the outbox: the store answers on a later turn
            return reporter.stop()

        started = time.monotonic()
        on_reactor(start_then_stop)
        assert time.monotonic() - started < 5
    assert on_reactor(store.outbox_next, channel.name, time.time() + 3600).attempts == 0
