"""``courier store copy``: a SQLite installation moved to PostgreSQL reads back the same."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

from engine.store import Cipher, Database, DeliverySelection, Incoming, StatusPoll
from engine.store.copy import _compare, copy_store

KEY = base64.b64encode(b"copy-test-key-not-a-secret-32byt").decode()
RAW = b"MSH|^~\\&|LAB|HOSP|||20260101||ORU^R01|CTRL%d|P|2.5\rPID|1||9434765919^^^NHS^NH||SECRETNAME^JANE\r"


def incoming(n: int) -> Incoming:
    return Incoming(
        channel="lab",
        raw=RAW % n,
        sending_application="LAB",
        sending_facility="HOSP",
        control_id=f"CTRL{n}",
        message_type="ORU^R01",
        received_at=1.0e9 + n,
        peer="127.0.0.1:5",
        destinations=("gp-conneqt", "ward-qliq"),
    )


def installation(path) -> None:
    """A store with something in every table: resends, sends, retries, a poll, the outbox, kv,
    operators' actions."""
    db = Database.open(path, Cipher(base64.b64decode(KEY)), clock=lambda: 1.5e9)
    with db.transaction():
        for n in range(3):
            db.receive(incoming(n))
        db.receive(incoming(0))  # a resend
        first, second = db.claim_due("ward-qliq", 2.0e9, limit=2, lease_s=30)
        poll = StatusPoll(first.id, "ward-qliq", "m-1", 2.0e9, 2.1e9, None, 0)
        db.mark_sent_polled(first.id, "m-1", "accepted", poll)
        db.mark_retry(second.id, 2.0e9, "HTTP 503 from the vendor", progress='{"done": 1}')
        db.cancel(DeliverySelection(destination="gp-conneqt", state="QUEUED", ids=(3,)))
        sent = db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", RAW % 9, "S1")
        db.outbox_done(sent)
        db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", RAW % 8, "S2")
        db.record_action("alice", "reloaded", "channel files", "restarted lab")
        skipped = db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", RAW % 7, "S3")
        db.outbox_skip(skipped, "skipped by operator alice: wrong feed", by="alice")
        db.kv_put("kpn-token", "lab/team", b"token-1")
        db.kv_put("qliq-conversation", db.keyed_hash(b"patient\x1forder").hex(), b"conv-1")
    db.close()


def courier(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_sqlite_store_copied_to_postgresql_lists_the_same_and_decrypts_under_its_new_key(
    tmp_path, postgres_url
) -> None:
    source = tmp_path / "courier.sqlite3"
    installation(source)
    new_key = tmp_path / "postgres.key"
    env = {name: value for name, value in os.environ.items() if not name.startswith("COURIER_STORE")}
    copied = courier(
        "store",
        "copy",
        "--from",
        str(source),
        "--to",
        postgres_url,
        "--to-key-file",
        str(new_key),
        env=dict(env, COURIER_STORE_KEY=KEY),
    )
    assert copied.returncode == 0, copied.stderr
    assert "every table has the same rows" in copied.stdout and "SECRETNAME" not in copied.stdout

    def both(*args: str) -> tuple[str, str]:
        before = courier(*args, "--store", str(source), env=dict(env, COURIER_STORE_KEY=KEY))
        after = courier(*args, "--store", postgres_url, "--key-file", str(new_key), env=env)
        assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
        return before.stdout, after.stdout

    for command in (
        ("messages", "list"),
        ("messages", "show", "CTRL0", "--body"),
        ("deliveries", "list"),
        ("deliveries", "show", "2"),
        ("outbox", "list"),
        ("outbox", "show", "2", "--body"),
        ("status", "CTRL0", "--details"),
        ("stats",),
    ):
        before, after = both(*command)
        assert before == after, command
    assert "SECRETNAME" in both("messages", "show", "CTRL1", "--body")[1]

    target = Database.open(postgres_url, Cipher(base64.b64decode(new_key.read_text().strip())))
    try:
        with target.transaction():
            again = target.receive(incoming(1))
            fresh = target.receive(incoming(7))
        assert again.duplicate, "a resend of a copied message is still a duplicate (same hash key)"
        assert fresh.message_id > 3, "new rows get ids after the copied ones (a resend may use one up)"
        assert target.kv_get("qliq-conversation", target.keyed_hash(b"patient\x1forder").hex()) == b"conv-1"
        keys = target.connection.execute("SELECT message_id FROM message_keys ORDER BY message_id").fetchall()
        assert keys == [(1,), (2,), (3,), (fresh.message_id,)], "each copied message holds its key"
        assert [(a.id, a.operator, a.action, a.subject, a.detail) for a in target.list_actions()] == [
            (2, "alice", "skipped", "outbox item 3", "skipped by operator alice: wrong feed"),
            (1, "alice", "reloaded", "channel files", "restarted lab"),
        ], "the operators' actions come along, their reasons decrypted under the new key"
        with target.transaction():
            target.record_action("bob", "logged in", "session from 127.0.0.1")
        assert target.list_actions(limit=1)[0].id == 3, "new actions get ids after the copied ones"
    finally:
        target.close()


def test_a_copy_into_a_store_that_holds_data_is_refused_in_one_line(tmp_path, postgres_url) -> None:
    source = tmp_path / "courier.sqlite3"
    installation(source)
    env = dict(os.environ, COURIER_STORE_KEY=KEY)
    assert courier("store", "copy", "--from", str(source), "--to", postgres_url, env=env).returncode == 0
    again = courier("store", "copy", "--from", str(source), "--to", postgres_url, env=env)
    assert again.returncode == 2 and "already holds data" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr


def test_the_comparison_finds_a_row_that_differs_after_the_copy(tmp_path, postgres_url) -> None:
    installation(tmp_path / "courier.sqlite3")
    cipher = Cipher(base64.b64decode(KEY))
    source = Database.open(tmp_path / "courier.sqlite3", cipher, readonly=True)
    target = Database.open(postgres_url, cipher)
    try:
        assert all(table.same for table in copy_store(source, target))
        with target.transaction():
            target.connection.execute("UPDATE deliveries SET attempts = attempts + 1 WHERE id = 2")
        assert not _compare("deliveries", source, target).same
        assert _compare("messages", source, target).same
    finally:
        source.close()
        target.close()
