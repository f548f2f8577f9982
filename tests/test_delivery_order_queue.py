"""``order_by`` in a running delivery queue: a real store file, a real HTTP receiver on loopback.

Patient A's first message fails once; A's later message waits for it (through the retry and a
restart of the queue), while patient B's messages overtake both.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from engine.channel.config import Destination as DestinationConfig
from engine.channel.config import RateLimit, Retry, StatusPolling
from engine.delivery import DeliveryQueue
from engine.destinations.registry import destination_class
from engine.mapping import load_mapping
from engine.spec import parse
from engine.store import Incoming, SQLiteStore
from tests.conftest import on_reactor
from tests.support.engine import open_store
from tests.support.subprocess_engine import HTTP_MAPPING
from tests.support.waiting import wait_for

RETRY_S = 0.6


class Receiver:
    """Answers 503 to the first attempt of the messages in ``fail_once``, 200 to the rest, and
    records (message id, status) in arrival order."""

    def __init__(self, fail_once: set[str]) -> None:
        self.fail_once = set(fail_once)
        self.arrivals: list[tuple[str, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 503 if body["messageId"] in receiver.fail_once else 200
                receiver.fail_once.discard(body["messageId"])
                receiver.arrivals.append((body["messageId"], status))
                time.sleep(0.05)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/results"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()

    def sent(self) -> list[str]:
        return [message for message, status in self.arrivals if status == 200]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def store(reactor, tmp_path) -> Iterator[SQLiteStore]:
    opened = open_store(reactor, tmp_path / "s.sqlite3", durability="normal")
    yield opened
    on_reactor(opened.close)


def queue(reactor, store, url: str, tmp_path: Path) -> DeliveryQueue:
    (tmp_path / "hook.toml").write_text(HTTP_MAPPING)
    cls = destination_class("http")
    settings, problems = parse(cls.settings_spec, {"url": url}, env={})
    assert problems == []
    config = DestinationConfig(
        name="hook",
        type="http",
        mapping=tmp_path / "hook.toml",
        settings=settings,
        retry=Retry(
            max_attempts=5, initial_delay_s=RETRY_S, max_delay_s=RETRY_S, factor=1, jitter=0, max_age_s=60
        ),
        rate_limit=RateLimit(None, 1),
        concurrency=4,
        status=StatusPolling(poll=False, poll_every_s=60, give_up_after_s=3600),
        order_by="{PID-3.1}",
    )
    made = DeliveryQueue(
        channel="lab",
        config=config,
        destination=cls(settings, requests.Session()),
        mapping=load_mapping(tmp_path / "hook.toml"),
        store=store,
        reactor=reactor,
        clock=reactor,
        idle_s=0.2,
    )
    on_reactor(made.start)
    return made


def receive(reactor, store, control_id: str, patient: str) -> None:
    raw = (
        f"MSH|^~\\&|LIS|LAB|COURIER|HOSP|20240101||ORU^R01|{control_id}|P|2.5\r"
        f"PID|1||{patient}^^^HOSP||DOE^JANE\rOBR|1||O1|GLU^Glucose"
    ).encode()
    incoming = Incoming(
        channel="lab",
        raw=raw,
        sending_application="LIS",
        sending_facility="LAB",
        control_id=control_id,
        message_type="ORU^R01",
        received_at=reactor.seconds(),
        peer="test",
        destinations=("hook",),
        order_keys=(("hook", patient),),
    )
    on_reactor(store.receive, incoming)


@pytest.mark.parametrize("restart", [False, True], ids=["retry", "retry and restart"])
def test_a_patient_waits_for_its_earlier_message_while_other_patients_overtake(
    reactor, store, tmp_path, restart
):
    receiver = Receiver(fail_once={"A1"})
    running = queue(reactor, store, receiver.url, tmp_path)
    try:
        receive(reactor, store, "A1", "MRN-A")
        wait_for(lambda: receiver.arrivals == [("A1", 503)], what="A1 failing once")
        for control_id, patient in (("A2", "MRN-A"), ("B1", "MRN-B"), ("B2", "MRN-B")):
            receive(reactor, store, control_id, patient)
        on_reactor(running.wake)
        wait_for(lambda: receiver.sent() == ["B1", "B2"], timeout=5, what="patient B's messages overtaking")
        commits = store.commits
        time.sleep(0.3)
        assert store.commits - commits <= 5, "a queue whose due rows wait in line does not spin"
        if restart:
            on_reactor(running.stop)
            running = queue(reactor, store, receiver.url, tmp_path)
        wait_for(lambda: len(receiver.sent()) == 4, timeout=10, what="every message sent")
    finally:
        on_reactor(running.stop)
        receiver.close()
    assert receiver.sent() == ["B1", "B2", "A1", "A2"], "A2 waited for A1's retry"
    waits = [d for d in on_reactor(store.list_deliveries) if d.waits_for is not None]
    assert waits == [], "nothing waits once all are sent"
