"""Crash tests: SIGKILL the engine under load, then restart it on the same store.

Every ACKed message must be stored exactly once: the engine runs as a real ``courier run``
process on a real SQLite file; two client threads send continuously over two connections and
remember each control id whose AA they received. The engine is killed at a random moment,
restarted on the same store, and must serve again.

Every delivery that reached SENT or ERROR must have its status report: the engine is killed
while deliveries complete (each commit of a new state is one with its report, or none), and
after the restart the ``courier listen`` hospital hears about every message once it is done.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from engine.message import Message
from engine.store import Cipher, Database
from tests.support.mllp import BlockingClient
from tests.support.postgres import committed_rows
from tests.support.scripted_http import Reply, ScriptedServer
from tests.support.subprocess_engine import (
    HTTP_CHANNEL,
    HTTP_MAPPING,
    STORE_KEY,
    EngineProcess,
    courier,
    free_port,
    listening,
)
from tests.support.waiting import wait_for

ORU = (
    "MSH|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101120000+0000||ORU^R01^ORU_R01|{cid}|P|2.5\r"
    "PID|1||P{cid}^^^HOSP^MR||DOE^JANE||19800101|F\r"
    "OBR|1|O{cid}|A{cid}|24331-1^Lipid panel^LN|||20260101110000\r"
    "OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L|||||F\r"
)


def sender(port: int, prefix: str, acked: list[str], stop: threading.Event) -> None:
    """Send until the engine dies; record the control ids whose AA came back."""
    number = 0
    try:
        with BlockingClient(port, timeout=5) as client:
            while not stop.is_set():
                number += 1
                control_id = f"{prefix}{number:06d}"
                reply = Message.parse(client.request(ORU.format(cid=control_id).encode()))
                msa = reply.segment("MSA")
                if msa.value(1) == "AA" and msa.value(2) == control_id:
                    acked.append(control_id)
    except (OSError, ConnectionError):
        return  # the engine was killed mid-conversation: expected


def stored_control_ids(store) -> list[str]:
    with sqlite3.connect(store) as db:
        return [row[0] for row in db.execute("SELECT control_id FROM messages WHERE state = 'RECEIVED'")]


# "normal" commits received messages on the reactor thread (engine.store.reactor_commits).
@pytest.mark.parametrize(("run", "durability"), [(0, "full"), (1, "normal"), (2, "normal")])
def test_sigkill_under_load_loses_no_acked_message_and_stores_none_twice(tmp_path, run, durability) -> None:
    seed = random.randrange(1_000_000)
    kill_after = random.Random(seed).uniform(0.3, 1.5)
    engine = EngineProcess(tmp_path, durability)
    engine.start()
    acked: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=sender, args=(engine.port, f"R{run}C{c}N", acked, stop)) for c in range(2)
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(kill_after)
        engine.kill()
        stop.set()
        for thread in threads:
            thread.join(10)
        assert len(acked) > 20, f"too little load before the kill (seed {seed})"

        stored = stored_control_ids(engine.store)
        missing = set(acked) - set(stored)
        assert not missing, (
            f"ACKed but not stored after SIGKILL at {kill_after:.2f}s (seed {seed}): {missing}"
        )
        assert len(stored) == len(set(stored)), "a message was stored twice"

        engine.start()
        with BlockingClient(engine.port) as client:
            reply = Message.parse(client.request(ORU.format(cid="AFTERRESTART").encode()))
            assert reply.segment("MSA").value(1) == "AA"
            # A resend of an ACKed message after the restart is a duplicate, not new work.
            resent = acked[-1]
            reply = Message.parse(client.request(ORU.format(cid=resent).encode()))
            assert (reply.segment("MSA").value(1), reply.segment("MSA").value(2)) == ("AA", resent)
        engine.stop()
        stored = stored_control_ids(engine.store)
        assert stored.count(resent) == 1 and "AFTERRESTART" in stored
        db = Database.open(engine.store, Cipher(base64.b64decode(STORE_KEY)), readonly=True)
        try:
            assert db.get_message(resent, with_body=True).raw == ORU.format(cid=resent).encode()
        finally:
            db.close()
    finally:
        stop.set()
        engine.stop()


DELIVERIES = 150
REPORTED = {"SENT": "accepted", "ERROR": "rejected"}  # every fifth is refused with HTTP 400


def reported(store: Path) -> list[tuple[str, str]]:
    """(original control id, event) of every status report in the outbox, sent or not."""
    db = Database.open(store, Cipher(base64.b64decode(STORE_KEY)), readonly=True)
    try:
        items = [db.get_outbox_item(item.id, with_payload=True) for item in db.list_outbox(limit=10_000)]
    finally:
        db.close()
    reports = [Message.parse(item.payload, default_charset="latin-1") for item in items]
    return sorted((m.segment("MSA").value(2), m.segment("ZDS").value(1)) for m in reports)


def finished(store: Path) -> list[tuple[str, str]]:
    """(control id, the report its state calls for) of every delivery that reached SENT or ERROR."""
    rows = committed_rows(
        store,
        "SELECT m.control_id, d.state FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE d.state IN ('SENT', 'ERROR')",
    )
    return sorted((control_id, REPORTED[state]) for control_id, state in rows)


def unfinished(store: Path) -> int:
    return committed_rows(store, "SELECT COUNT(*) FROM deliveries WHERE state NOT IN ('SENT', 'ERROR')")[0][0]


@pytest.mark.parametrize("run", range(3))
def test_sigkill_while_deliveries_complete_loses_no_status_report(tmp_path, run) -> None:
    seed = random.randrange(1_000_000)
    sandbox = ScriptedServer()
    sandbox.reply(*[Reply(400 if n % 5 == 0 else 200, {}) for n in range(DELIVERIES)])
    env = dict(os.environ, COURIER_STORE_KEY=STORE_KEY)
    hospital_port, port, store = free_port(), free_port(), tmp_path / "courier.sqlite3"
    (tmp_path / "lab.toml").write_text(
        HTTP_CHANNEL.format(port=port, url=sandbox.base_url, hospital=hospital_port, retry=0.5)
    )
    (tmp_path / "hook.toml").write_text(HTTP_MAPPING)
    hospital = courier(
        "listen", f"tcp:{hospital_port}:interface=127.0.0.1", "--summary", cwd=tmp_path, env=env
    )

    def start() -> subprocess.Popen:
        engine = courier("run", "lab.toml", "--store", str(store), cwd=tmp_path, env=env)
        wait_for(lambda: listening(port, engine), timeout=30, what="courier run listening")
        return engine

    engine, output, stop = None, {}, threading.Event()
    try:
        wait_for(lambda: listening(hospital_port, hospital), timeout=30, what="courier listen")
        engine = start()
        load = threading.Thread(target=sender, args=(port, f"S{run}N", [], stop))
        load.start()
        # Killed at a random moment while messages arrive and their deliveries complete.
        kill_after = random.Random(seed).randrange(5, 80)
        wait_for(lambda: len(finished(store)) >= kill_after, timeout=20, what="deliveries completing")
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        stop.set()
        load.join(10)
        done = finished(store)
        assert reported(store) == done, f"a state change and its report committed apart (seed {seed})"

        engine = start()
        wait_for(lambda: unfinished(store) == 0, timeout=30, what="every delivery done")
        assert reported(store) == finished(store), "one report per delivery, none twice"
        wait_for(
            lambda: committed_rows(store, "SELECT COUNT(*) FROM outbox WHERE state != 'SENT'") == [(0,)],
            timeout=20,
            what="every status report at the hospital",
        )
    finally:
        for name, process in (("engine", engine), ("hospital", hospital)):
            if process is not None:
                process.terminate()
                output[name] = process.communicate(timeout=20)
        stop.set()
        sandbox.close()
    assert "Traceback" not in output["engine"][1]
    heard = {line.split()[4] for line in output["hospital"][0].splitlines() if line.startswith("ACK")}
    assert heard == {control_id for control_id, _ in finished(store)}
