"""Draining at the vendor's limit: connections kept alive, requests kept in flight, and a rate
limit that holds across restarts and across queues sharing one store.

Real HTTP servers on loopback and real store files; no timing is asserted tighter than the
shared test machine allows.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
from engine.destinations import StaticToken
from engine.node import NodeIdentity
from engine.service import routes
from engine.store import Cipher, Incoming, open_store
from engine.store.base import SENDING, SENT
from engine.store.rate_buckets import RateBucket
from tests.conftest import on_reactor
from tests.support.postgres import committed_rows
from tests.support.scripted_http import Reply, ScriptedServer
from tests.support.waiting import wait_for
from tests.test_channel_check import REPO
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


KPN_CHANNEL = """
    name = "wards"
    [source]
    listen = "tcp:0:interface=127.0.0.1"
    [source.filter]
    message_types = ["ORU^R01"]
"""
KPN_DESTINATION = """
    [[destinations]]
    name = "{name}"
    type = "kpn"
    mapping = "chat.toml"
    concurrency = {concurrency}
    rate_limit = {rate_limit}
      [destinations.settings]
      base_url = "{url}"
      client_id = "{client_id}"
      requests_per_second = {per_second}
"""
KPN_MAPPING = """
    input = ["ORU^R01"]
    output = "kpn"
    [fields]
    chat_type = {{ const = "groupchat" }}
    aux_id = {{ const = "ward-7" }}
    body = {{ template = "result {{MSH-10}}" }}
"""


def kpn_channel_file(
    tmp_path: Path,
    url: str,
    per_second: float,
    client_ids: dict[str, str],
    rate_limit: str = "{}",
    concurrency: int = 8,
) -> Path:
    """The wards channel with a KPN destination per entry of ``client_ids`` (name → client id)."""
    (tmp_path / "chat.toml").write_text(textwrap.dedent(KPN_MAPPING.format()))
    file = tmp_path / f"wards-{'-'.join(client_ids)}.toml"
    common = {"url": url, "per_second": per_second, "rate_limit": rate_limit, "concurrency": concurrency}
    destinations = [
        KPN_DESTINATION.format(name=name, client_id=client_id, **common)
        for name, client_id in client_ids.items()
    ]
    file.write_text(textwrap.dedent(KPN_CHANNEL) + "".join(map(textwrap.dedent, destinations)))
    return file


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
                channel=self.channel.name,
                raw=oru(control_id, patient=f"P{n}"),
                sending_application="LIS",
                sending_facility="LAB",
                control_id=control_id,
                message_type="ORU^R01",
                received_at=time.time(),
                peer="test",
                destinations=tuple(destination.name for destination in self.channel.destinations),
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
    on_reactor(second.queue.wake)
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


def drain_in_nodes(reactor, location: Path | str, channel_file: Path, count: int, nodes: list[Path]) -> None:
    """Store ``count`` messages for every destination of ``channel_file``, then drain them with
    an engine process for each of ``nodes`` (a channel file with some of those destinations)."""
    key = os.urandom(32)
    (channel,) = load_channels([channel_file], env={})
    receiver = Engine(reactor, location, key, channel, "receiver")
    try:
        receiver.receive(count)
    finally:
        receiver.close()
    env = {**os.environ, "DRAIN_NODE_KEY": key.hex()}
    command = [sys.executable, "-m", "tests.support.drain_node", str(location)]
    children = [
        subprocess.Popen([*command, str(node), f"drain-{n}"], env=env, cwd=REPO)
        for n, node in enumerate(nodes)
    ]
    for child in children:
        assert child.wait(timeout=60) == 0


def test_kpn_destinations_on_two_nodes_keep_their_shared_client_ids_limit_together(
    reactor, hook, tmp_path, store_location
):
    url = hook.base_url
    both = kpn_channel_file(tmp_path, url, 30, {"ward-a": "shared-client", "ward-b": "shared-client"})
    nodes = [kpn_channel_file(tmp_path, url, 30, {ward: "shared-client"}) for ward in ("ward-a", "ward-b")]
    drain_in_nodes(reactor, store_location, both, 40, nodes)  # a node for each ward
    times = [request.at for request in hook.received]
    assert len(times) == 80
    # KPN's 30 calls a second per client id, paced at 90 %: the two processes, each with an
    # in-process bucket of its own, sent at twice that
    assert within_rate(times, 30, 1)
    assert max(times) - min(times) >= 79 / 27 - 0.2
    (bucket,) = committed_rows(store_location, "SELECT destination FROM rate_buckets")
    assert re.fullmatch("account:[0-9a-f]{64}", bucket[0])  # the client id only as a keyed hash
    if isinstance(store_location, Path):
        stored = b"".join(path.read_bytes() for path in store_location.parent.glob("courier.sqlite3*"))
        assert b"shared-client" not in stored


def test_kpn_destinations_with_their_own_client_ids_do_not_slow_each_other(reactor, hook, tmp_path):
    both = kpn_channel_file(tmp_path, hook.base_url, 10, {"ward-a": "client-a", "ward-b": "client-b"})
    drain_in_nodes(reactor, tmp_path / "courier.sqlite3", both, 18, [both])
    times = sorted(request.at for request in hook.received)
    assert len(times) == 36
    assert within_rate(times, 2 * 10, 2)
    # 9 a second each: 17 / 9 ≈ 1.9 s; one limit for both would take 35 / 9 ≈ 3.9 s
    assert times[-1] - times[0] < 3.0


def test_a_sends_further_calls_are_booked_too(engines, hook, tmp_path):
    hook.reply(*[Reply(302, "", {"Location": "/groupchats/g-1/messages/m"}), Reply(200, {"id": "m"})] * 8)
    # one at a time, so that the server's scripted answers go to the request they are for
    file = kpn_channel_file(tmp_path, hook.base_url, 30, {"hook": "client-1"}, "{ per_second = 10 }", 1)
    (channel,) = load_channels([file], env={})
    engine = engines(channel)
    engine.start_queue().destination.token_provider = StaticToken("test-token")
    engine.receive(8)
    wait_for(lambda: engine.count(SENT) == 8, 10, "all sent")
    times = [request.at for request in hook.received]
    assert [request.method for request in hook.received] == ["POST", "GET"] * 8
    assert within_rate(times, 10, 1)  # a Location read right after its POST: 20 a second
