"""The MLLP listener over real loopback sockets: framing, ordering, bounds, TLS."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from twisted.internet import defer, endpoints, task

from engine.mllp.server import Limits, MLLPServerFactory, Reply
from tests.conftest import on_reactor
from tests.support.mllp import BlockingClient
from tests.support.waiting import wait_for


class EchoHandler:
    """Replies ``ACK:<payload>``; optionally delays each reply to test ordering."""

    def __init__(self, reactor, delays: list[float] | None = None, hold: bool = False):
        self.reactor = reactor
        self.delays = list(delays or [])
        self.hold = hold
        self.held: list[defer.Deferred] = []
        self.seen: list[bytes] = []

    def handle_frame(self, payload: bytes, peer: str) -> defer.Deferred:
        self.seen.append(payload)
        reply = Reply(b"ACK:" + payload)
        if self.hold:
            d = defer.Deferred()
            d.addCallback(lambda _: reply)
            self.held.append(d)
            return d
        if self.delays:
            return task.deferLater(self.reactor, self.delays.pop(0), lambda: reply)
        return defer.succeed(reply)

    def refuse_oversize(self, head: bytes, peer: str) -> bytes | None:
        return b"TOO-LARGE:" + head[:10]

    def refuse_failed(self, payload: bytes, peer: str) -> bytes | None:
        return b"FAILED:" + payload


@pytest.fixture
def listen(reactor):
    ports = []

    def start(handler, limits=None, clock=None, wrap=None):
        factory = MLLPServerFactory("test", handler, clock or reactor, limits or Limits())
        served = wrap(factory) if wrap else factory
        endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = on_reactor(endpoint.listen, served)
        ports.append(port)
        return port.getHost().port, factory

    yield start
    for port in ports:
        on_reactor(port.stopListening)


def test_many_messages_on_one_connection(reactor, listen) -> None:
    port, _ = listen(EchoHandler(reactor))
    with BlockingClient(port) as client:
        for i in range(20):
            assert client.request(b"MSH|%d" % i) == b"ACK:MSH|%d" % i


def test_several_frames_in_one_write_are_answered_in_order(reactor, listen) -> None:
    port, _ = listen(EchoHandler(reactor))
    with BlockingClient(port) as client:
        client.send_raw(b"".join(b"\x0bMSH|%d\x1c\r" % i for i in range(10)))
        assert [client.receive() for _ in range(10)] == [b"ACK:MSH|%d" % i for i in range(10)]


def test_replies_keep_arrival_order_even_when_handling_finishes_out_of_order(reactor, listen) -> None:
    handler = EchoHandler(reactor, delays=[0.3, 0.0, 0.1])
    port, _ = listen(handler)
    with BlockingClient(port) as client:
        client.send_raw(b"\x0bA\x1c\r\x0bB\x1c\r\x0bC\x1c\r")
        assert [client.receive() for _ in range(3)] == [b"ACK:A", b"ACK:B", b"ACK:C"]


def test_one_frame_split_over_many_writes(reactor, listen) -> None:
    port, _ = listen(EchoHandler(reactor))
    data = b"\x0bMSH|^~\\&|SPLIT\x1c\r"
    with BlockingClient(port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), 3):
            client.send_raw(data[i : i + 3])
            time.sleep(0.01)
        assert client.receive() == b"ACK:MSH|^~\\&|SPLIT"


def test_junk_outside_frames_is_logged_with_its_size_and_the_connection_keeps_serving(
    reactor, listen, caplog
) -> None:
    port, _ = listen(EchoHandler(reactor))
    with caplog.at_level(logging.INFO), BlockingClient(port) as client:
        client.send_raw(b"GET / HTTP/1.0\r\n\r\n" + b"\x0bMSH|1\x1c\r")
        assert client.receive() == b"ACK:MSH|1"
        assert client.request(b"MSH|2") == b"ACK:MSH|2"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("discarded 18 bytes outside an MLLP frame" in e for e in errors)


def test_frame_missing_trailing_cr_is_accepted_with_a_warning(reactor, listen, caplog) -> None:
    port, _ = listen(EchoHandler(reactor))
    with caplog.at_level(logging.WARNING), BlockingClient(port) as client:
        client.send_raw(b"\x0bMSH|1\x1c\x0bMSH|2\x1c\r")
        assert [client.receive(), client.receive()] == [b"ACK:MSH|1", b"ACK:MSH|2"]
    assert any("no <CR>" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_broken_frame_is_discarded_and_never_answered(reactor, listen, caplog) -> None:
    handler = EchoHandler(reactor)
    port, _ = listen(handler)
    with caplog.at_level(logging.ERROR), BlockingClient(port) as client:
        client.send_raw(b"\x0bMSH|BROKEN" + b"\x0bMSH|GOOD\x1c\r")
        assert client.receive() == b"ACK:MSH|GOOD"
        assert client.request(b"MSH|NEXT") == b"ACK:MSH|NEXT"
    assert handler.seen == [b"MSH|GOOD", b"MSH|NEXT"]
    assert any("unfinished frame" in r.getMessage() for r in caplog.records)


def test_oversize_frame_is_refused_and_the_connection_closed(reactor, listen, caplog) -> None:
    handler = EchoHandler(reactor)
    port, _ = listen(handler, Limits(max_message_bytes=1000))
    with caplog.at_level(logging.ERROR), BlockingClient(port) as client:
        client.send_raw(b"\x0bMSH|^~\\&|BIG" + b"X" * 5000)
        assert client.receive() == b"TOO-LARGE:MSH|^~\\&|B"
        assert client.is_closed_by_peer()
    assert handler.seen == []
    assert any("max_message_bytes=1000" in r.getMessage() for r in caplog.records)


def test_idle_connection_is_closed(reactor, listen) -> None:
    clock = task.Clock()
    port, _ = listen(EchoHandler(reactor), Limits(idle_timeout_s=60), clock=clock)
    with BlockingClient(port) as client:
        assert client.request(b"MSH|1") == b"ACK:MSH|1"
        on_reactor(clock.advance, 59)
        assert client.request(b"MSH|2") == b"ACK:MSH|2", "activity resets the idle timer"
        on_reactor(clock.advance, 61)
        assert client.is_closed_by_peer()


def test_unfinished_frame_times_out_and_the_partial_frame_is_dropped(reactor, listen, caplog) -> None:
    clock = task.Clock()
    handler = EchoHandler(reactor)
    port, _ = listen(handler, Limits(frame_timeout_s=5, idle_timeout_s=600), clock=clock)
    with caplog.at_level(logging.ERROR), BlockingClient(port) as client:
        client.send_raw(b"\x0bMSH|never finished")
        time.sleep(0.1)
        on_reactor(clock.advance, 6)
        assert client.is_closed_by_peer()
    assert handler.seen == []
    assert any("not finished within 5" in r.getMessage() for r in caplog.records)


def test_connections_beyond_the_maximum_are_refused(reactor, listen, caplog) -> None:
    port, factory = listen(EchoHandler(reactor), Limits(max_connections=2))
    first, second = BlockingClient(port), BlockingClient(port)
    try:
        assert first.request(b"MSH|1") == b"ACK:MSH|1"
        assert second.request(b"MSH|2") == b"ACK:MSH|2"
        try:
            third = BlockingClient(port)
        except ConnectionError:
            pass  # reset while connecting: refused before the handshake even finished
        else:
            with third:
                assert third.is_closed_by_peer()
        assert first.request(b"MSH|3") == b"ACK:MSH|3"
    finally:
        first.close()
        second.close()
    deadline = time.monotonic() + 2
    while on_reactor(lambda: factory.connections) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert on_reactor(lambda: factory.connections) == 0


def test_reading_pauses_when_too_many_frames_wait(reactor, listen) -> None:
    handler = EchoHandler(reactor, hold=True)
    port, factory = listen(handler, Limits(max_pending_frames=4))
    protocols = []
    original = factory.buildProtocol
    factory.buildProtocol = lambda addr: protocols.append(original(addr)) or protocols[-1]
    with BlockingClient(port) as client:
        client.send_raw(b"".join(b"\x0bM%d\x1c\r" % i for i in range(10)))
        deadline = time.monotonic() + 2
        while not (protocols and on_reactor(lambda: protocols[0].reading_paused)):
            assert time.monotonic() < deadline, "reading never paused"
            time.sleep(0.01)
        assert len(handler.seen) == 1, "one frame in flight per connection"
        for i in range(10):
            while len(handler.held) <= i:
                time.sleep(0.005)
            on_reactor(handler.held[i].callback, None)
            assert client.receive() == b"ACK:M%d" % i
        assert not on_reactor(lambda: protocols[0].reading_paused)


def test_reading_pauses_when_frames_pile_up_behind_one_in_flight(reactor, listen) -> None:
    handler = EchoHandler(reactor, hold=True)
    port, factory = listen(handler, Limits(max_pending_frames=4))
    protocols = []
    original = factory.buildProtocol
    factory.buildProtocol = lambda addr: protocols.append(original(addr)) or protocols[-1]
    with BlockingClient(port) as client:
        client.send(b"FIRST")
        while len(handler.held) < 1:
            time.sleep(0.005)
        for i in range(6):  # each in its own read, while FIRST waits for the store
            client.send(b"M%d" % i)
            time.sleep(0.02)
        assert on_reactor(lambda: protocols[0].reading_paused), "reading never paused"
        on_reactor(handler.held[0].callback, None)
        assert client.receive() == b"ACK:FIRST"


def test_thousands_of_pipelined_frames_answered_at_once_are_all_answered(reactor, listen) -> None:
    """Replies ready at once (refusals) must not recurse once per frame."""
    port, _ = listen(EchoHandler(reactor), Limits(max_pending_frames=10_000))
    count = 3000
    with BlockingClient(port, timeout=10) as client:
        client.send_raw(b"".join(b"\x0bM%d\x1c\r" % i for i in range(count)))
        assert [client.receive() for _ in range(count)] == [b"ACK:M%d" % i for i in range(count)]


def test_the_client_closes_after_a_negative_commit_so_the_nak_after_it_answers_nothing(
    reactor, listen
) -> None:
    from engine.mllp.client import CommitRejected, connect

    class Refusing(EchoHandler):
        def handle_frame(self, payload: bytes, peer: str) -> defer.Deferred:
            return defer.succeed(Reply(b"NAK:" + payload, committed=False))

    port, _ = listen(Refusing(reactor), Limits(mllp_release2=True))
    client = on_reactor(connect, reactor, f"tcp:host=127.0.0.1:port={port}")
    with pytest.raises(CommitRejected):
        on_reactor(client.send, b"MSH|1", timeout=5)
    deadline = time.monotonic() + 5
    while not on_reactor(lambda: client.closed.called):
        assert time.monotonic() < deadline, "the connection stayed open after 0x15"
        time.sleep(0.01)


def test_mllp_release2_commit_byte_precedes_the_ack(reactor, listen) -> None:
    port, _ = listen(EchoHandler(reactor), Limits(mllp_release2=True))
    with BlockingClient(port) as client:
        client.send(b"MSH|1")
        assert client.receive() == b"\x06"
        assert client.receive() == b"ACK:MSH|1"


def test_a_frame_whose_handling_fails_is_answered_and_the_connection_kept(reactor, listen, caplog) -> None:
    class Failing(EchoHandler):
        def handle_frame(self, payload: bytes, peer: str) -> defer.Deferred:
            if payload.startswith(b"BAD"):
                return defer.fail(ValueError("embedded null character"))
            return super().handle_frame(payload, peer)

    port, _ = listen(Failing(reactor))
    with caplog.at_level(logging.ERROR), BlockingClient(port) as client:
        assert client.request(b"BAD1") == b"FAILED:BAD1"
        assert client.request(b"MSH|2") == b"ACK:MSH|2"
    assert any("answering with a NAK" in r.getMessage() for r in caplog.records)


def test_only_a_nak_that_cannot_be_built_closes_the_connection(reactor, listen) -> None:
    class Hopeless(EchoHandler):
        def handle_frame(self, payload: bytes, peer: str) -> defer.Deferred:
            return defer.fail(ValueError("broken"))

        def refuse_failed(self, payload: bytes, peer: str) -> bytes | None:
            raise ValueError("broken too")

    port, _ = listen(Hopeless(reactor))
    with BlockingClient(port) as client:
        client.send(b"BAD")
        assert client.is_closed_by_peer()


def test_the_frame_timeout_never_fires_while_the_engine_itself_has_paused_reading(
    reactor, listen, caplog
) -> None:
    """A client that pipelines correctly must not be reset for the engine's own slowness: while
    reading is paused (max_pending_frames), the rest of a started frame waits in the kernel."""
    count, size = 30, 10_000  # 300 KB: reads of 64 KiB end inside a frame
    handler = EchoHandler(reactor, delays=[0.05] * count)  # 1.5 s of work > frame_timeout_s
    port, _ = listen(handler, Limits(frame_timeout_s=0.3, max_pending_frames=2))
    frames = [b"M%03d" % i + b"x" * size for i in range(count)]
    with caplog.at_level(logging.ERROR), BlockingClient(port, timeout=10) as client:
        client.send_raw(b"".join(b"\x0b" + f + b"\x1c\r" for f in frames))
        assert [client.receive() for _ in range(count)] == [b"ACK:" + f for f in frames]
    assert not any("not finished within" in r.getMessage() for r in caplog.records)


def test_a_draining_listener_answers_the_frames_it_read_then_closes(reactor, listen) -> None:
    handler = EchoHandler(reactor, hold=True)
    port, factory = listen(handler)
    busy, idle = BlockingClient(port), BlockingClient(port)
    busy.send_raw(b"\x0bMSH|1\x1c\r\x0bMSH|2\x1c\r")
    wait_for(lambda: len(handler.held) == 1)
    drained = []
    on_reactor(lambda: factory.drain().addCallback(drained.append) and None)
    assert idle.is_closed_by_peer(), "a connection with nothing to answer closes at once"
    on_reactor(handler.held[0].callback, None)
    assert busy.receive() == b"ACK:MSH|1"
    wait_for(lambda: len(handler.held) == 2)
    on_reactor(handler.held[1].callback, None)
    assert busy.receive() == b"ACK:MSH|2", "a frame read before the drain is answered too"
    assert busy.is_closed_by_peer()
    wait_for(lambda: drained == [None], what="the drain done")
    assert factory.open == set()


def test_a_drain_aborts_a_connection_whose_frame_is_never_answered(reactor, listen) -> None:
    clock = task.Clock()
    handler = EchoHandler(reactor, hold=True)
    port, factory = listen(handler, clock=clock)
    stuck = BlockingClient(port)
    stuck.send(b"MSH|1")
    wait_for(lambda: len(handler.held) == 1)
    done = []
    on_reactor(lambda: factory.drain(grace_s=5).addCallback(done.append) and None)
    on_reactor(clock.advance, 5)
    assert stuck.is_closed_by_peer()
    wait_for(lambda: done == [None], what="the drain done")
