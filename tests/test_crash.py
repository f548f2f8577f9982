"""Crash test: SIGKILL the engine under load; every ACKed message must be stored exactly once.

The engine runs as a real ``courier run`` process on a real SQLite file; two client threads
send continuously over two connections and remember each control id whose AA they received.
The engine is killed at a random moment, restarted on the same store, and must serve again.
"""

from __future__ import annotations

import base64
import random
import sqlite3
import threading
import time

import pytest

from engine.message import Message
from engine.store import Cipher, Database
from tests.support.mllp import BlockingClient
from tests.support.subprocess_engine import STORE_KEY, EngineProcess

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
