"""Restart: ``courier run`` killed with SIGKILL and started again on the same store file.

The engine is a real child process on the example MedAllies channel (a copy of
``channels/ris_oru_to_medallies.toml`` with free ports); the MedAllies sandbox and the
hospital's status listener run in the test process. Status messages waiting in the outbox
while the hospital was down reach it after the restart, each once; a delivery the kill left
SENDING is sent again with the same MedAllies messageId, so the vendor keeps one message.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.message import Message
from tests.conftest import on_reactor
from tests.support import e2e
from tests.support.e2e import (
    CHANNELS,
    RunningEngine,
    example_channels,
    reset_sandboxes,
    sample,
    sandbox_secrets_env,
    wait_for,
    with_msh,
)
from tests.support.engine import open_store
from tests.support.hospital import Hospital
from tests.support.mllp import BlockingClient
from tests.support.subprocess_engine import free_port

sandboxes = e2e.sandboxes  # fixture

STORE_KEY = base64.b64encode(b"e2e-restart-test-key-32-bytes!!!").decode()


class CourierRun:
    """``courier run`` on a copy of the MedAllies example channel and one store file."""

    def __init__(self, workdir: Path, sandboxes, hospital_port: int) -> None:
        self.port = free_port()
        self.store = workdir / "courier.sqlite3"
        text = (CHANNELS / "ris_oru_to_medallies.toml").read_text()
        text = re.sub(r'listen = "[^"]*"', f'listen = "tcp:{self.port}:interface=127.0.0.1"', text)
        text = re.sub(r'to = "[^"]*"', f'to = "tcp:host=127.0.0.1:port={hospital_port}"', text)
        text = text.replace('mapping = "../mappings/', f'mapping = "{CHANNELS.parent}/mappings/')
        self.channel = workdir / "ris_oru_to_medallies.toml"
        self.channel.write_text(text)
        given = dict(os.environ, COURIER_STORE_KEY=STORE_KEY)
        self.env = sandbox_secrets_env([self.channel], sandboxes, given)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "engine", "run", str(self.channel), "--store", str(self.store)]
        self.process = subprocess.Popen(
            command, env=self.env, cwd=CHANNELS.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

        def listening() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"courier run exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                BlockingClient(self.port, timeout=0.2).close()
            except OSError:
                return False
            return True

        wait_for(listening, 20, "courier run to listen")

    def send(self, raw: bytes) -> str:
        """Send one message; its MSA-1."""
        with BlockingClient(self.port) as client:
            return client.request(raw).decode().split("MSA|")[1][:2]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:  # still waiting on a send in flight
                self.kill()

    def query(self, sql: str, *args) -> list[tuple]:
        with sqlite3.connect(self.store, timeout=5) as db:
            return db.execute(sql, args).fetchall()

    def delivery_state(self, control_id: str) -> str | None:
        rows = self.query(
            "SELECT d.state FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE m.control_id = ?",
            control_id,
        )
        return rows[0][0] if rows else None

    def pending_outbox(self) -> tuple[int, int]:
        """(PENDING items, attempts at the head one)."""
        [row] = self.query("SELECT count(*), max(attempts) FROM outbox WHERE state = 'PENDING'")
        return row[0], row[1] or 0


@pytest.fixture
def courier(tmp_path, sandboxes) -> Iterator[CourierRun]:
    reset_sandboxes(sandboxes)
    run = CourierRun(tmp_path, sandboxes, free_port())
    yield run
    run.stop()


def radiology(control_id: str) -> bytes:
    """The radiology sample asking for every status (MSH-16 AL), so SENT is reported (accepted)."""
    return with_msh(sample("oru_r01_radiology_mri.hl7"), control_id=control_id, app_ack="AL")


def test_statuses_pending_in_the_outbox_reach_the_hospital_after_a_kill_each_once(courier, reactor):
    courier.start()
    control_ids = ["RAD-RS-1", "RAD-RS-2"]
    for control_id in control_ids:
        assert courier.send(radiology(control_id)) == "CA"
    wait_for(lambda: all(courier.delivery_state(c) == "SENT" for c in control_ids), what="both SENT")
    wait_for(
        lambda: courier.pending_outbox()[0] == 2 and courier.pending_outbox()[1] > 0,
        what="two statuses pending, the first tried while the hospital is down",
    )
    courier.kill()

    hospital = Hospital(
        reactor, port=int(re.search(r"port=(\d+)", courier.channel.read_text()).group(1))
    ).up()
    try:
        courier.start()
        reports = [hospital.wait_about(c, 1, timeout=15)[0] for c in control_ids]
        assert [r.segment("ZDS").value(1) for r in reports] == ["accepted", "accepted"]
        assert [m.segment("MSA").value(2) for m in hospital.messages] == control_ids, "in order"
        wait_for(
            lambda: courier.query("SELECT count(*) FROM outbox WHERE state = 'SENT'")[0][0] == 2,
            what="the outbox marked SENT",
        )
        time.sleep(0.3)
        assert len(hospital.messages) == 2, "none twice"
    finally:
        hospital.down()


def test_a_delivery_left_sending_by_the_kill_is_sent_again_and_medallies_keeps_one(courier, sandboxes):
    medallies = sandboxes.medallies
    on_reactor(medallies.set_faults, latency_s=30)  # MedAllies takes the message, answers late
    courier.start()
    assert courier.send(radiology("RAD-SENDING")) == "CA"
    wait_for(lambda: len(medallies.state.messages) == 1, what="MedAllies to accept the message")
    assert courier.delivery_state("RAD-SENDING") == "SENDING"
    courier.kill()

    on_reactor(medallies.set_faults, latency_s=0)
    courier.start()
    wait_for(lambda: courier.delivery_state("RAD-SENDING") == "SENT", timeout=15, what="SENT after restart")
    sends = [r for r in medallies.state.requests if r.path.endswith("/dirmsg/send_ccda")]
    assert len(sends) == 2 and sends[0].body["messageId"] == sends[1].body["messageId"]
    [message_id] = medallies.state.messages
    assert medallies.state.duplicates[message_id] == 1, "the resend was recognised, not stored again"


def test_a_store_restored_from_backup_does_not_reuse_vendor_message_ids(reactor, sandboxes, tmp_path):
    reset_sandboxes(sandboxes)
    hospital = Hospital(reactor).up()
    engines = []
    try:
        for n, name in enumerate(("oru_r01_lab_fbc_pdf.hl7", "oru_r01_lab_two_orders.hl7")):
            store = open_store(reactor, tmp_path / f"store-{n}.sqlite3")  # the second: restored, older
            channels = example_channels(sandboxes, hospital.port)
            engines.append((RunningEngine(reactor, sandboxes, store, channels), store))
            control_id = Message.parse(sample(name)).control_id
            engines[-1][0].send("lis-oru-to-conneqt", sample(name))
            engines[-1][0].wait_state(control_id, "SENT", "ERROR")
        assert engines[-1][0].deliveries(control_id)[0].state == "SENT"
    finally:
        for running, store in engines:
            running.stop()
            on_reactor(store.close)
        hospital.down()
