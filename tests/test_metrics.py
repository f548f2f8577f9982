"""What the metrics count: a channel's messages by outcome over real MLLP into a real store,
and the store's gauges read off the reactor."""

from __future__ import annotations

import pytest
from twisted.internet import task

from engine.message import Message
from engine.message.ack import AckError
from engine.metrics import Metrics, StoreGauges
from engine.metrics.instruments import hold_reason, status_class
from engine.source import Accepted, Refused, Source
from engine.store.base import Incoming
from tests import test_reload
from tests.conftest import on_reactor
from tests.support.engine import listen, open_store
from tests.support.mllp import BlockingClient
from tests.support.waiting import wait_for
from tests.test_reload import accepted
from tests.test_reload import oru as reload_oru
from tests.test_source import BrokenStore, oru

running, files, hook = test_reload.running, test_reload.files, test_reload.hook  # fixtures


def screen(message: Message) -> Accepted:
    """Accept, filter out or refuse by the control id's first letter."""
    if message.control_id.startswith("F"):
        return Accepted(("dest",), "FILTERED")
    if message.control_id.startswith("R"):
        raise Refused(AckError(103, "table value not found"))
    return Accepted(("dest",))


@pytest.fixture
def serve(reactor, tmp_path):
    """A "lab" channel on real MLLP counting into a fresh registry; ``store`` replaces the real one."""
    started = []

    def start(store=None, **source_options):
        metrics = Metrics()
        store = store or open_store(reactor, tmp_path / "courier.sqlite3")
        source = Source("lab", store, reactor, screen, metrics=metrics.channel("lab"), **source_options)
        port, listening, _ = listen(reactor, "lab", source)
        started.append((listening, store))
        return port, metrics, store

    yield start
    for listening, store in started:
        on_reactor(listening.stopListening)
        if hasattr(store, "close"):
            on_reactor(store.close)


@pytest.fixture
def channel(serve):
    return serve()


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_message_is_counted_once_by_its_outcome(channel) -> None:
    port, metrics, _ = channel
    with BlockingClient(port) as client:
        for control_id in ("A1", "A2", "F1", "R1", "R2"):
            client.request(oru(control_id))
        client.request(oru("A1"))  # the same message again
        client.request(b"this is not HL7")
    counted = {
        name: value(metrics, f"courier_messages_{name}_total", channel="lab")
        for name in ("received", "accepted", "filtered", "duplicate")
    }
    assert counted == {"received": 7, "accepted": 2, "filtered": 1, "duplicate": 1}
    assert value(metrics, "courier_messages_refused_total", channel="lab", code="103") == 2
    assert value(metrics, "courier_messages_refused_total", channel="lab", code="100") == 1
    assert value(metrics, "courier_ack_latency_seconds_count", channel="lab") == 7
    assert value(metrics, "courier_store_commit_seconds_count", channel="lab") == 4  # refusals store nothing


BATCH = b"BHS|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101||||B1\r%sBTS|2\r"
INBOUND_ACK = b"MSH|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101||ACK^R01^ACK|K1|P|2.5\rMSA|AA|X1\r"


def refused(metrics: Metrics) -> dict[str, float]:
    """The channel's refusals by ERR-3 code (codes never counted left out)."""
    return {
        sample.labels["code"]: sample.value
        for metric in metrics.refused.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.value
    }


def test_a_message_the_store_failed_is_refused_once_and_an_inbound_ack_not_at_all(serve) -> None:
    """Every message counted as received is counted once by its outcome; an inbound ACK is
    counted in neither, even when its store fails (it gets no NAK in original mode)."""
    port, metrics, _ = serve(store=BrokenStore())
    with BlockingClient(port) as client:
        client.send(INBOUND_ACK)
        assert b"MSA|AE|A1" in client.request(oru("A1"))
        assert client.request(BATCH % (oru("A2") + oru("R1"))).count(b"MSA|") == 2
    assert value(metrics, "courier_messages_received_total", channel="lab") == 3
    assert refused(metrics) == {"207": 2, "103": 1}
    assert metrics.refusals() == {"lab": 3}


def test_a_frame_whose_handling_fails_is_counted_once_whatever_its_messages_verdicts(serve) -> None:
    """The sender got one NAK for the frame: its refused message, never answered, is not
    counted beside it."""

    def broken(destinations: tuple[str, ...]) -> None:
        raise RuntimeError("a bug after the commit")

    port, metrics, _ = serve(on_queued=broken)
    with BlockingClient(port) as client:
        reply = client.request(BATCH % (oru("A1") + oru("R1")))
    assert b"MSA|AR|" in reply and b"207" in reply
    assert refused(metrics) == {"207": 1}


def test_store_gauges_count_the_waiting_deliveries_and_age_the_oldest(reactor, tmp_path) -> None:
    store = open_store(reactor, tmp_path / "courier.sqlite3")
    clock = task.Clock()
    clock.advance(1000.0)
    for n in range(3):
        incoming = Incoming(
            "lab", oru(f"Q{n}"), "LAB", "HOSP", f"Q{n}", "ORU^R01", 990.0 + n, "peer", destinations=("dest",)
        )
        on_reactor(store.receive, incoming)
    gauges = StoreGauges(store, clock, lambda: ["lab"], lambda: {"dest": "lab", "idle": "lab"}, refresh_s=5.0)
    metrics = Metrics()
    metrics.registry.register(gauges)
    assert value(metrics, "courier_queue_depth", channel="lab", destination="dest", state="QUEUED") is None
    on_reactor(gauges.startService)  # the first read, on the store's reader thread
    try:
        wait_for(lambda: value(metrics, "courier_store_size_bytes"), what="the first snapshot")
        assert value(metrics, "courier_queue_depth", channel="lab", destination="dest", state="QUEUED") == 3
        assert value(metrics, "courier_queue_depth", channel="lab", destination="idle", state="QUEUED") == 0
        clock.advance(20.0)  # ages count to the scrape, not to the read
        assert value(metrics, "courier_queue_oldest_age_seconds", channel="lab", destination="dest") == 30.0
        assert value(metrics, "courier_queue_oldest_age_seconds", channel="lab", destination="idle") == 0.0
        assert value(metrics, "courier_outbox_depth", channel="lab") == 0
    finally:
        on_reactor(gauges.stopService)
        on_reactor(store.close)


def test_labels_come_from_fixed_sets_whatever_a_plugin_says() -> None:
    metrics = Metrics()
    metrics.channel("lab").refused(9434765919)  # a code no HL7 table has: never a label
    assert value(metrics, "courier_messages_refused_total", channel="lab", code="other") == 1
    assert [hold_reason(w) for w in ("auth", "endpoint not found", "dns", "patient Jane Doe")] == [
        "auth",
        "endpoint",
        "dns",
        "other",
    ]
    assert [status_class(s) for s in (200, 302, 404, 503, None, 99)] == [
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "error",
        "error",
    ]


def test_counts_carry_on_across_a_reload_and_an_added_channel_is_counted(running, files, hook) -> None:
    a_port = files.write_http("a")
    engine = running()
    registry = engine.metrics.registry
    with BlockingClient(a_port) as a:
        assert accepted(a.request(reload_oru("A1")))
    files.write_http_mapping("a", "2")
    b_port = files.write_http("b")
    report = on_reactor(engine.reload)
    assert (report.restarted, report.added) == (("a",), ("b",))
    with BlockingClient(a_port) as a, BlockingClient(b_port) as b:
        assert accepted(a.request(reload_oru("A2"))) and accepted(b.request(reload_oru("B1")))
    assert registry.get_sample_value("courier_messages_accepted_total", {"channel": "a"}) == 2
    assert registry.get_sample_value("courier_messages_accepted_total", {"channel": "b"}) == 1
    assert registry.get_sample_value("courier_listener_connections", {"channel": "b"}) is not None
    b_queue = {"channel": "b", "destination": "b-hook", "state": "QUEUED"}
    wait_for(
        lambda: registry.get_sample_value("courier_queue_depth", b_queue) is not None, 20, "b's queue gauge"
    )
