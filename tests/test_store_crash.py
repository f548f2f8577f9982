"""A killed process loses no message whose receive had already answered (the ACK point)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from engine.store.crypto import Cipher
from engine.store.database import Database

ROOT = Path(__file__).resolve().parents[1]

# Four concurrent "connections" receive as fast as they can and print each control id the
# moment its Deferred fires, which is when the receiver would send the ACK.
RECEIVER = """
import sys, time
from twisted.internet import defer, task
from engine.store import Cipher, Incoming, open_store

@defer.inlineCallbacks
def connection(store, name):
    i = 0
    while True:
        control_id = f"{name}-{i}"
        yield store.receive(Incoming("lab", b"MSH|" + control_id.encode(), "LIS", "HOSP",
                                     control_id, "ORU^R01", time.time(), "peer",
                                     destinations=("qliq",)))
        sys.stdout.write(control_id + "\\n")
        sys.stdout.flush()
        i += 1

@defer.inlineCallbacks
def main(reactor, path, key):
    store = open_store(path, reactor=reactor, cipher=Cipher(bytes.fromhex(key)), durability="normal")
    yield store.start()
    yield defer.gatherResults([connection(store, n) for n in "abcd"])

task.react(main, sys.argv[1:])
"""


def test_no_acked_message_is_lost_when_the_process_is_killed(store_location):
    """On SQLite and on PostgreSQL (with ``synchronous_commit = off``: the server keeps every
    commit when only the engine dies)."""
    key = os.urandom(32)
    path = store_location
    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(path), key.hex()],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )
    acked = []
    try:
        while len(acked) < 400:
            line = proc.stdout.readline()
            assert line, "receiver exited early"
            acked.append(line.strip())
        proc.send_signal(signal.SIGKILL)
        acked += [line.strip() for line in proc.stdout]
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()

    db = Database.open(path, Cipher(key))
    try:
        stored = {m.control_id for m in db.list_messages(limit=1_000_000)}
        queued = {d.control_id for d in db.list_deliveries(state="QUEUED", limit=1_000_000)}
    finally:
        db.close()
    assert set(acked) <= stored
    assert set(acked) <= queued
