"""Draining at the vendor's limit: connections kept alive, requests kept in flight, and a rate
limit that holds across restarts and across queues sharing one store.

Real HTTP servers on loopback and real store files; no timing is asserted tighter than the
shared test machine allows.
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from engine.channel.check import load_channels
from engine.delivery import DeliveryQueue
from engine.delivery.ratelimit import Pacer
from engine.node import NodeIdentity
from engine.service import routes
from engine.store import Cipher, Incoming, open_store
from engine.store.base import SENDING, SENT
from engine.store.rate_buckets import RateBucket
from tests.conftest import on_reactor
from tests.support.scripted_http import Reply, ScriptedServer
from tests.support.waiting import wait_for
from tests.test_delivery_queue import oru

HTTP_CHANNEL = """
    name = "drain"
    [source]
    listen = "tcp:0:interface=127.0.0.1"
    [source.filter]
    message_types = ["ORU^R01"]
    [[destinations]]
    name = "hook"
    type = "http"
    mapping = "hook.toml"
    concurrency = {concurrency}
    rate_limit = {rate_limit}
      [destinations.settings]
      url = "{url}"
"""
HTTP_MAPPING = """
    input = ["ORU^R01"]
    output = "http"
    [fields]
    patient = {{ path = "PID-3.1" }}
"""


def http_channel(tmp_path: Path, url: str, concurrency: int, rate_limit: str = "{}"):
    (tmp_path / "hook.toml").write_text(textwrap.dedent(HTTP_MAPPING.format()))
    file = tmp_path / "drain.toml"
    channel = HTTP_CHANNEL.format(url=url, concurrency=concurrency, rate_limit=rate_limit)
    file.write_text(textwrap.dedent(channel))
    (channel,) = load_channels([file], env={})
    return channel


@pytest.fixture
def hook() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


class Engine:
    """One engine node's side of a destination: its own store (as another process would have)
    on the shared one, and the destination's queue, started and stopped by the test."""

    def __init__(self, reactor, location: Path | str, key: bytes, channel, name: str) -> None:
        self.reactor, self.channel = reactor, channel
        node = NodeIdentity(name, f"{name}.1", "test-host", os.getpid())
        self.store = open_store(
            location, reactor=reactor, cipher=Cipher(key), durability="normal", node=node, lease_s=30.0
        )
        on_reactor(self.store.start)
        self.queue: DeliveryQueue | None = None

    def start_queue(self) -> DeliveryQueue:
        (route,) = routes(self.channel, time.time)
        self.queue = DeliveryQueue(
            channel=self.channel.name,
            config=self.channel.destinations[0],
            destination=route.destination,
            mapping=route.mapping,
            store=self.store,
            reactor=self.reactor,
            clock=self.reactor,
            idle_s=0.1,
            lease_s=1.0,  # what a stop leaves SENDING comes back soon
        )
        on_reactor(self.queue.start)
        return self.queue

    def stop_queue(self) -> None:
        if self.queue is not None:
            on_reactor(self.queue.stop)
            self.queue = None

    def receive(self, count: int) -> None:
        for n in range(count):
            control_id = f"DRAIN{n}"
            incoming = Incoming(
                channel="drain",
                raw=oru(control_id, patient=f"P{n}"),
                sending_application="LIS",
                sending_facility="LAB",
                control_id=control_id,
                message_type="ORU^R01",
                received_at=time.time(),
                peer="test",
                destinations=("hook",),
            )
            on_reactor(self.store.receive, incoming)
        if self.queue is not None:
            on_reactor(self.queue.wake)

    def count(self, state: str) -> int:
        return len(on_reactor(self.store.list_deliveries, destination="hook", state=state, limit=1000))

    def close(self) -> None:
        self.stop_queue()
        on_reactor(self.store.close)


@pytest.fixture
def engines(reactor, store_location) -> Iterator[list[Engine]]:
    """Call with a channel to get an engine node; every one made shares one store (a SQLite
    file, then a PostgreSQL database)."""
    made: list[Engine] = []
    key = os.urandom(32)

    def engine(channel) -> Engine:
        made.append(Engine(reactor, store_location, key, channel, f"node-{len(made)}"))
        return made[-1]

    yield engine
    for one in made:
        one.close()


def within_rate(times: list[float], per_second: float, burst: int, slack_s: float = 0.1) -> bool:
    """No stretch of the requests holds more than ``burst`` plus ``per_second`` a second
    (``slack_s`` for the threads' and the network's jitter)."""
    times = sorted(times)
    return all(
        j - i + 1 <= burst + per_second * (times[j] - times[i] + slack_s)
        for i in range(len(times))
        for j in range(i + 1, len(times))
    )


def test_a_destination_keeps_a_connection_alive_for_each_of_its_threads(tmp_path):
    server = ScriptedServer()
    try:
        concurrency, rounds = 16, 3
        server.reply(*[Reply(200, {}, delay_s=0.1)] * (concurrency * rounds))
        (route,) = routes(http_channel(tmp_path, server.base_url, concurrency), time.time)

        def send(n: int) -> str:
            return route.destination.send({"n": n}, idempotency_key=f"k{n}").outcome.value

        with ThreadPoolExecutor(concurrency) as threads:  # as the queue's own threads send
            for _ in range(rounds):  # in waves: every connection is idle at once in between
                assert set(threads.map(send, range(concurrency))) == {"accepted"}
        assert server.connections <= concurrency  # requests' default kept 10: 28 connections
    finally:
        server.close()


def test_sends_a_stalled_process_missed_are_booked_again_not_sent_at_once(engines, tmp_path):
    store = engines(http_channel(tmp_path, "http://127.0.0.1:1", 1)).store
    clock = Clock()
    clock.advance(1000.0)
    pacer = Pacer(store, [RateBucket("hook", per_second=10)], clock=clock)
    started: list[float] = []

    def ask(count: int) -> None:
        for _ in range(count):
            pacer.wait().addCallback(lambda _: started.append(clock.seconds()))
        clock.advance(0)  # the booking goes to the store

    def booked(count: int) -> None:  # the store answered: a timer for each send
        wait_for(lambda: len(on_reactor(clock.getDelayedCalls)) == count, 5, "the booking")
        on_reactor(clock.advance, 0)

    on_reactor(ask, 3)
    booked(3)  # 1000.0, 1000.1, 1000.2
    assert started == [1000.0]
    on_reactor(clock.advance, 1.0)  # the process stalls for a second: both times missed
    booked(2)  # booked again: 1001.0 and 1001.1
    assert started == [1000.0, 1001.0]
    on_reactor(clock.advance, 0.11)
    assert started == [1000.0, 1001.0, pytest.approx(1001.11)]


def test_a_restart_lets_no_burst_through_beyond_the_limit(engines, hook, tmp_path):
    channel = http_channel(tmp_path, hook.base_url, 4, "{ per_second = 5, burst = 3 }")
    engine = engines(channel)
    engine.receive(12)
    engine.start_queue()
    wait_for(lambda: engine.count(SENT) >= 5, 10, "five sent")
    engine.stop_queue()  # a restart: a new queue, with nothing of the old one but the store
    engine.start_queue()
    wait_for(lambda: engine.count(SENT) == 12, 10, "all sent")
    times = [request.at for request in hook.received]
    assert len(times) == 12
    assert within_rate(times, 5, 3)  # an in-memory bucket started full again: 3 at once


def test_two_engines_on_one_store_keep_the_limit_together(engines, hook, tmp_path):
    channel = http_channel(tmp_path, hook.base_url, 4, "{ per_second = 8, burst = 2 }")
    first, second = engines(channel), engines(channel)
    first.start_queue()
    second.start_queue()
    first.receive(20)
    second.queue.wake()
    wait_for(lambda: first.count(SENT) == 20, 10, "all sent")
    times = [request.at for request in hook.received]
    assert len(times) == 20
    assert within_rate(times, 8, 2)  # one bucket each let through twice the limit
    assert times[-1] - times[0] >= (20 - 2) / 8 - 0.1


def test_a_slow_limit_claims_only_what_it_lets_go_soon_and_a_stop_does_not_wait_for_it(
    engines, hook, tmp_path
):
    engine = engines(http_channel(tmp_path, hook.base_url, 8, "{ per_second = 1, burst = 1 }"))
    engine.receive(8)
    engine.start_queue()
    wait_for(lambda: len(hook.received) == 1, 5, "the first send")
    time.sleep(0.3)
    # the burst and half a second of the rate: 2, not all 8 held SENDING for 8 seconds
    assert engine.count(SENDING) <= 2
    started = time.monotonic()
    engine.stop_queue()  # the one waiting for its time is left for the next start
    assert time.monotonic() - started < 0.5
