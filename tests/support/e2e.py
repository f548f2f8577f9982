"""End-to-end harness: the shipped example channels, the four vendor sandboxes, a hospital.

The channels and mappings are the real files in ``channels/`` and ``mappings/``, loaded the
way ``courier run --sandbox`` loads them (each secret variable takes the sandboxes' random
credential), with their ``${VAR:-default}`` URLs pointed at sandboxes on free ports. Only
what a test must control is replaced in the loaded dataclasses: each listener moves to a free
loopback port, status reports go to the test's :class:`Hospital`, retries and status polls
are a few tens of milliseconds apart.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from courier_sandbox import DEFAULT_PORTS, Sandboxes, start_sandboxes
from courier_sandbox.base import VendorSandbox
from courier_sandbox.credentials import Credentials
from engine.channel.check import load_channels
from engine.channel.config import Channel, Destination, Retry
from engine.commands.run import point_sandboxes_at_webhooks, start_sandbox_hooks, with_sandbox_secrets
from engine.message import Message
from engine.message.batch import split_file
from engine.service import build_engine
from engine.store import Store
from engine.store.base import Delivery
from tests.conftest import on_reactor
from tests.support.engine import open_store
from tests.support.hospital import Hospital
from tests.support.mllp import BlockingClient
from tests.support.subprocess_engine import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = ROOT / "channels"
SAMPLES = ROOT / "sample_messages"

FAST_RETRY = Retry(max_attempts=6, initial_delay_s=0.05, max_delay_s=0.3, factor=2, jitter=0, max_age_s=60)
#: Vendor statuses move only when a test forces them (control API), so every sequence is exact.
MANUAL_STATUSES = {
    "http": {},  # a receiver has no statuses: SENT is the last state
    "qliq": {"delivered_after_s": None, "read_after_s": None},
    "conneqt": {"completed_after_s": None},
    "medallies": {"processed_after_s": None, "dispatched_after_s": None},
    # The example KPN mapping addresses group chats by our own auxiliary ids; register them
    # in the sandbox's directory as an operator registers them with KPN.
    "kpn": {
        "aux_groupchats": {
            "courier-ward-7": "sandbox-group-1",
            "courier-emergency-department": "sandbox-group-1",
        }
    },
}


def sample(name: str) -> bytes:
    """The first message of a shipped sample file, segments separated by CR as on the wire."""
    return split_file((SAMPLES / name).read_bytes())[0]


def with_msh(raw: bytes, *, control_id: str, app_ack: str | None = None) -> bytes:
    """``raw`` with a new MSH-10, and MSH-16 (application ACK type) when given; "" clears
    MSH-15 and MSH-16 both, so the channel's ``status_reports.events`` decide (original mode)."""
    header, rest = raw.split(b"\r", 1)
    fields = header.decode("ascii").split("|")
    fields.extend([""] * (17 - len(fields)))
    fields[9] = control_id
    if app_ack == "":
        fields[14] = fields[15] = ""
    elif app_ack is not None:
        fields[15] = app_ack
    return "|".join(fields).encode("ascii") + b"\r" + rest


def set_field(raw: bytes, segment: str, field: int, value: str) -> bytes:
    """``raw`` with one field of the first ``segment`` (not MSH) replaced."""
    lines = raw.split(b"\r")
    i = next(i for i, line in enumerate(lines) if line.startswith(segment.encode() + b"|"))
    fields = lines[i].split(b"|")
    fields[field] = value.encode()
    lines[i] = b"|".join(fields)
    return b"\r".join(lines)


def obx_pdf(raw: bytes) -> bytes:
    """The decoded bytes of the first OBX ED's OBX-5.5 (the PDF a sample carries)."""
    message = Message.parse(raw)
    ed = next(s for s in message.all("OBX") if s.value(2) == "ED")
    return base64.b64decode(ed.value(5, component=5))


def force_status(sandbox: VendorSandbox, message_id: str, **change: str) -> None:
    """Move a message to a status through the sandbox's control API, over HTTP."""
    answer = requests.post(f"{sandbox.base_url}/_sandbox/status/{message_id}", json=change, timeout=5)
    assert answer.status_code == 200, answer.text


def reset_sandboxes(sandboxes: Sandboxes) -> None:
    """A fresh recording, no faults, statuses that move only when forced; between tests."""
    for sandbox in sandboxes:
        on_reactor(sandbox.reset)
        sandbox.configure(MANUAL_STATUSES[sandbox.name])


def sandbox_env(sandboxes: Sandboxes) -> dict[str, str]:
    """The environment the example channels read their vendor URLs from."""
    return {
        "QLIQ_BASE_URL": sandboxes.qliq.base_url,
        "CONNEQT_BASE_URL": sandboxes.conneqt.base_url,
        "MEDALLIES_BASE_URL": sandboxes.medallies.base_url,
        "KPN_BASE_URL": sandboxes.kpn.base_url,
    }


def load_against_sandboxes(
    paths: list[Path], sandboxes: Sandboxes, env: Mapping[str, str] | None = None
) -> list[Channel]:
    """Channel files loaded as ``courier run --sandbox`` loads them, with the URLs of
    :func:`sandbox_env` (plus ``env``): secret variables take the sandboxes' credentials."""
    return load_channels(paths, env=sandbox_secrets_env(paths, sandboxes, env or {}))


def sandbox_secrets_env(paths: list[Path], sandboxes: Sandboxes, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the URLs of :func:`sandbox_env`, and the sandboxes' credentials in the
    channel files' secret variables that ``env`` leaves unset (as ``courier run --sandbox``)."""
    given = {**sandbox_env(sandboxes), **env}
    return with_sandbox_secrets(paths, sandboxes.credentials, sandboxes.base_urls(), given)


def loopback_redirect(destination: Destination) -> Mapping[str, Any]:
    """KPN's OAuth redirect on a free port rather than the example's fixed 8765."""
    if destination.type != "kpn":
        return destination.settings
    return {**destination.settings, "redirect_uri": f"http://127.0.0.1:{free_port()}/callback"}


def example_channels(
    sandboxes: Sandboxes, hospital_port: int, *, retry: Retry = FAST_RETRY, poll_every_s: float = 0.1
) -> list[Channel]:
    """``channels/`` against the sandboxes, listening on free ports, reporting to the hospital."""
    loaded = load_against_sandboxes([CHANNELS], sandboxes)
    return [
        replace(
            channel,
            source=replace(channel.source, listen="tcp:0:interface=127.0.0.1"),
            destinations=tuple(
                replace(
                    d,
                    settings=loopback_redirect(d),
                    retry=retry,
                    status=replace(d.status, poll_every_s=poll_every_s),
                )
                for d in channel.destinations
            ),
            status_reports=replace(
                channel.status_reports,
                to=f"tcp:host=127.0.0.1:port={hospital_port}",
                connect_timeout_s=1.0,
                ack_timeout_s=2.0,
            ),
        )
        for channel in loaded
    ]


class RunningEngine:
    """``build_engine`` over the example channels (``options`` are its keyword arguments),
    with helpers to talk to it and watch it. Started as ``courier run --sandbox`` starts it: KPN
    authorised against the sandbox, conneQt's access code exchanged, the sandboxes' webhook
    URLs pointed at the engine when it serves webhooks."""

    def __init__(
        self, reactor, sandboxes: Sandboxes, store: Store, channels: list[Channel], **options: Any
    ) -> None:
        self.store = store
        self.channels = {c.name: c for c in channels}
        self.engine = build_engine(reactor, channels, store, **options)
        base_urls = sandboxes.base_urls()
        self.engine.queue_setup = lambda queues: start_sandbox_hooks(reactor, queues, base_urls)
        on_reactor(self.engine.start)
        if self.engine.webhooks is not None:
            point_sandboxes_at_webhooks(sandboxes, self.engine)

    def send(self, channel: str, payload: bytes) -> Message:
        """Send one message over a new MLLP connection; its ACK."""
        with BlockingClient(self.engine.port(channel)) as client:
            return Message.parse(client.request(payload))

    def deliveries(self, control_id: str) -> list[Delivery]:
        found = on_reactor(self.store.list_deliveries, limit=1000)
        return [d for d in found if d.control_id == control_id]

    def poll_now(self, control_id: str) -> None:
        """Make the message's status poll due now and wake its poller (as if its time came)."""
        [delivery] = self.deliveries(control_id)
        on_reactor(self.store.reschedule_status_poll, delivery.id, 0.0)
        on_reactor(self.engine.deliveries.pollers[delivery.destination].wake)

    def states(self, control_id: str) -> list[str]:
        """The delivery states the message's timeline went through, in order."""
        return [
            event.state
            for event in on_reactor(self.store.timeline, control_id)
            if event.delivery_id is not None
        ]

    def wait_state(self, control_id: str, *states: str, timeout: float = 10.0) -> Delivery:
        """Wait until the message's (only) delivery is in one of ``states``."""

        def reached() -> Delivery | None:
            found = self.deliveries(control_id)
            return found[0] if len(found) == 1 and found[0].state in states else None

        return wait_for(reached, timeout, f"delivery of {control_id} in {states}")

    def stop(self) -> None:
        on_reactor(self.engine.stop)


# Fixtures, imported by the test modules that use them.


@pytest.fixture(scope="module")
def sandboxes(reactor) -> Iterator[Sandboxes]:
    """The sandboxes on free ports, for one test module, with random credentials
    as ``courier run --sandbox`` makes them."""
    started = on_reactor(
        start_sandboxes, reactor, ports=dict.fromkeys(DEFAULT_PORTS, 0), credentials=Credentials.generate()
    )
    yield started
    on_reactor(started.stop)


@pytest.fixture
def hospital(reactor) -> Iterator[Hospital]:
    listening = Hospital(reactor).up()
    yield listening
    listening.down()


@pytest.fixture
def store(reactor, tmp_path) -> Iterator[Store]:
    opened = open_store(reactor, tmp_path / "courier.sqlite3")
    yield opened
    on_reactor(opened.close)


@pytest.fixture
def engine(reactor, sandboxes, hospital, store) -> Iterator[RunningEngine]:
    """The example channels running against fresh sandboxes, reporting to ``hospital``."""
    reset_sandboxes(sandboxes)
    running = RunningEngine(reactor, sandboxes, store, example_channels(sandboxes, hospital.port))
    yield running
    running.stop()
