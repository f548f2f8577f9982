"""``courier messages``, ``deliveries`` and ``outbox`` on a real store file, as an operator runs them."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from engine.store import Cipher, Database, Incoming

KEY = base64.b64encode(b"cli-test-key-not-a-secret-32byte").decode()
RAW = b"MSH|^~\\&|LAB|HOSP|||20260101||ORU^R01|CTRL1|P|2.5\rPID|1||9434765919^^^NHS^NH||SECRETNAME^JANE\r"


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "courier.sqlite3"
    db = Database.open(path, Cipher(base64.b64decode(KEY)))
    with db.transaction():
        db.receive(
            Incoming(
                channel="lab",
                raw=RAW,
                sending_application="LAB",
                sending_facility="HOSP",
                control_id="CTRL1",
                message_type="ORU^R01",
                received_at=1.0e9,
                peer="127.0.0.1:5",
                destinations=("gp-conneqt", "ward-qliq"),
            )
        )
    db.close()
    return path


def courier(store, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COURIER_STORE_KEY=KEY)
    return subprocess.run(
        [sys.executable, "-m", "engine", *args, "--store", str(store)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_messages_list_and_show_keep_phi_out_unless_asked(store) -> None:
    listing = courier(store, "messages", "list")
    assert listing.returncode == 0 and "CTRL1" in listing.stdout and "ORU^R01" in listing.stdout
    shown = courier(store, "messages", "show", "CTRL1")
    assert "SECRETNAME" not in shown.stdout and "9434765919" not in shown.stdout
    with_body = courier(store, "messages", "show", "CTRL1", "--body")
    assert "SECRETNAME" in with_body.stdout


def test_deliveries_list_show_cancel_requeue(store) -> None:
    listing = courier(store, "deliveries", "list", "--destination", "ward-qliq")
    assert listing.returncode == 0
    rows = [line for line in listing.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 1 and "ward-qliq" in rows[0] and "QUEUED" in rows[0]
    delivery_id = rows[0].split()[0]
    assert "SECRETNAME" not in courier(store, "deliveries", "show", delivery_id).stdout

    assert "cancelled 1 deliveries" in courier(store, "deliveries", "cancel", delivery_id).stdout
    assert "CANCELLED" in courier(store, "deliveries", "list", "--state", "CANCELLED").stdout
    assert "requeued 1 deliveries" in courier(store, "deliveries", "requeue", "--state", "CANCELLED").stdout
    assert courier(store, "deliveries", "requeue").returncode == 2, "no filter: refuse to touch everything"


def test_outbox_list_show_and_skip(store) -> None:
    db = Database.open(store, Cipher(base64.b64decode(KEY)))
    with db.transaction():
        first = db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", RAW, "S1")
        db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", RAW, "S2")
    db.close()

    listing = courier(store, "outbox", "list", "--channel", "lab")
    assert listing.returncode == 0
    assert listing.stdout.count("PENDING") == 2 and "SECRETNAME" not in listing.stdout
    assert "SECRETNAME" not in courier(store, "outbox", "show", str(first)).stdout
    assert "SECRETNAME" in courier(store, "outbox", "show", str(first), "--body").stdout

    skipped = courier(store, "outbox", "skip", str(first), "--reason", "the listener rejects it")
    assert skipped.returncode == 0
    shown = courier(store, "outbox", "show", str(first)).stdout
    assert "ERROR" in shown and "skipped by an operator: the listener rejects it" in shown
    assert courier(store, "outbox", "skip", str(first), "--reason", "again").returncode == 1
    assert courier(store, "outbox", "list", "--state", "PENDING").stdout.count("PENDING") == 1
