"""``courier messages``, ``deliveries``, ``outbox``, ``stats``, ``status`` and ``store`` as an operator
runs them, on a real SQLite file and on a real PostgreSQL database (``store_location``)."""

from __future__ import annotations

import base64
import getpass
import os
import subprocess
import sys

import pytest

from engine.store import Cipher, Database, DeliverySelection, Incoming, load_cipher

KEY = base64.b64encode(b"cli-test-key-not-a-secret-32byte").decode()
RAW = b"MSH|^~\\&|LAB|HOSP|||20260101||ORU^R01|CTRL1|P|2.5\rPID|1||9434765919^^^NHS^NH||SECRETNAME^JANE\r"


@pytest.fixture
def store(store_location):
    return stored_message(store_location, Cipher(base64.b64decode(KEY)))


def db_incoming(control_id: str = "CTRL1", sending_application: str = "LAB") -> Incoming:
    """RAW, queued for two destinations."""
    return Incoming(
        channel="lab",
        raw=RAW,
        sending_application=sending_application,
        sending_facility="HOSP",
        control_id=control_id,
        message_type="ORU^R01",
        received_at=1.0e9,
        peer="127.0.0.1:5",
        destinations=("gp-conneqt", "ward-qliq"),
    )


def stored_message(path, cipher: Cipher, control_id: str = "CTRL1", sending_application: str = "LAB"):
    """A store file holding RAW, queued for two destinations."""
    db = Database.open(path, cipher)
    with db.transaction():
        db.receive(db_incoming(control_id, sending_application))
    db.close()
    return path


def courier(store, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COURIER_STORE_KEY=KEY, **env_vars)
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


def test_deliveries_show_prints_how_far_a_partial_send_got(store) -> None:
    db = Database.open(store, Cipher(base64.b64decode(KEY)))
    with db.transaction():
        (claimed,) = db.claim_due("ward-qliq", 2.0e9, limit=1, lease_s=30)
        db.mark_retry(claimed.id, 2.0e9, "request 2 of 2: HTTP 500", progress='{"done": 1}')
    db.close()
    shown = courier(store, "deliveries", "show", str(claimed.id)).stdout
    assert "request 2 of 2: HTTP 500" in shown and '{"done": 1}' in shown


def test_deliveries_list_and_show_say_what_a_delivery_waits_for_in_its_order_by_line(store) -> None:
    from dataclasses import replace

    db = Database.open(store, Cipher(base64.b64decode(KEY)))
    with db.transaction():
        message = replace(db_incoming(), control_id="CTRL2", order_keys=(("ward-qliq", "9434765919"),))
        db.receive(replace(message, control_id="CTRL3"))
        db.receive(message)
        claimed = db.claim_due("ward-qliq", 2.0e9, limit=10, lease_s=30, max_in_flight=4)
    (head,) = [d for d in claimed if d.control_id == "CTRL3"]
    db.close()
    waiting = [
        line for line in courier(store, "deliveries", "list").stdout.splitlines() if "waits for" in line
    ]
    assert len(waiting) == 1 and waiting[0].endswith(f"(waits for {head.id})") and "CTRL2" in waiting[0]
    assert [d.control_id for d in claimed] == ["CTRL1", "CTRL3"], "CTRL2 waits behind CTRL3"
    shown = courier(store, "deliveries", "show", waiting[0].split()[0]).stdout
    assert f"waits_for        {head.id}" in shown and "9434765919" not in shown


def test_a_held_destination_shows_in_deliveries_and_stats_until_it_works_again(store) -> None:
    db = Database.open(store, Cipher(base64.b64decode(KEY)))
    with db.transaction():
        (claimed,) = db.claim_due("ward-qliq", 2.0e9, limit=1, lease_s=30)
        db.release(
            claimed.id, 2.0e9, "no such endpoint: check base_url (HTTP 404)", hold="endpoint not found"
        )
    db.close()
    held = "destination ward-qliq HELD (endpoint not found)"
    assert held in courier(store, "deliveries", "list").stdout
    assert held not in courier(store, "deliveries", "list", "--destination", "gp-conneqt").stdout
    assert held in courier(store, "stats").stdout

    db = Database.open(store, Cipher(base64.b64decode(KEY)))
    with db.transaction():
        (claimed,) = db.claim_due("ward-qliq", 2.0e9, limit=1, lease_s=30)
        db.mark_sent(claimed.id, "m-1", "accepted by qliq")
    db.close()
    assert "HELD" not in courier(store, "stats").stdout


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
    assert "ERROR" in shown and "skipped by operator cli:" in shown and "the listener rejects it" in shown
    assert courier(store, "outbox", "skip", str(first), "--reason", "again").returncode == 1
    assert courier(store, "outbox", "list", "--state", "PENDING").stdout.count("PENDING") == 1


def test_outbox_show_body_decodes_the_character_set_the_message_declares(store) -> None:
    msh = "MSH|^~\\&|QLIQ|WARDS|EHR|HOSP|20260101||MDM^T02|S3|P|2.5.1||||||UNICODE UTF-8"
    utf8 = msh + "\rOBX|1|TX|||Müller\r"
    db = Database.open(store, Cipher(base64.b64decode(KEY)))
    with db.transaction():
        item = db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", utf8.encode(), "S3")
    db.close()
    assert "OBX|1|TX|||Müller" in courier(store, "outbox", "show", str(item), "--body").stdout


def test_store_rotate_key_with_a_key_file(tmp_path, store_location) -> None:
    key_file = tmp_path / "store.key"
    path = stored_message(store_location, load_cipher({}, key_file))
    env = {name: value for name, value in os.environ.items() if not name.startswith("COURIER_STORE")}

    def courier_with_key_file(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "engine", *args, "--store", str(path), "--key-file", str(key_file)]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    rotated = courier_with_key_file("store", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    old_keys = tmp_path / "store.key.old"
    assert "SECRETNAME" in courier_with_key_file("messages", "show", "CTRL1", "--body").stdout
    kept = old_keys.read_text()
    old_keys.unlink()
    refused = courier_with_key_file("messages", "show", "CTRL1")
    assert refused.returncode != 0 and "does not fit" in refused.stderr and "Traceback" not in refused.stderr
    old_keys.write_text(kept)
    old_keys.chmod(0o600)

    rekeyed = courier_with_key_file("store", "rekey")
    assert rekeyed.returncode == 0 and "messages.raw_enc" in rekeyed.stdout
    old_keys.unlink()
    assert "SECRETNAME" in courier_with_key_file("messages", "show", "CTRL1", "--body").stdout
    assert "old keys are no longer needed" in courier_with_key_file("store", "rekey").stdout


def test_store_rotate_key_refuses_a_key_from_the_environment(store) -> None:
    refused = courier(store, "store", "rotate-key")
    assert refused.returncode == 2 and "COURIER_STORE_OLD_KEYS" in refused.stderr


def test_stats_counts_by_channel_destination_and_state(store) -> None:
    shown = courier(store, "stats")
    assert shown.returncode == 0, shown.stderr
    (messages,) = [
        line.split() for line in shown.stdout.splitlines() if line.startswith("lab ") and "→" not in line
    ]
    assert messages == ["lab", "1", "0", "0", "0"], "1 RECEIVED, none FILTERED, ACK_RECEIVED or resent"
    queued = [line.split() for line in shown.stdout.splitlines() if line.startswith("lab →")]
    assert sorted(row[2] for row in queued) == ["gp-conneqt", "ward-qliq"]
    assert all(row[3] == "1" for row in queued), "each destination has one QUEUED delivery"
    assert "SECRETNAME" not in shown.stdout
    recent = courier(store, "stats", "--since", "1").stdout
    assert "lab" not in recent, "the message arrived in 2001, not in the last hour"


def test_store_prune_deletes_old_finished_messages_only(store) -> None:
    db = Database.open(store, Cipher(base64.b64decode(KEY)))
    with db.transaction():
        db.cancel(DeliverySelection(channel="lab"))  # both deliveries final: nothing more to do
    db.close()
    assert (
        "messages            0 deleted" in courier(store, "store", "prune", "--older-than", "365000").stdout
    )
    pruned = courier(store, "store", "prune", "--older-than", "30", "--vacuum")
    assert pruned.returncode == 0, pruned.stderr
    assert (
        "messages            1 deleted" in pruned.stdout and "deliveries          2 deleted" in pruned.stdout
    )
    assert "CTRL1" not in courier(store, "messages", "list").stdout


def test_store_actions_lists_what_operators_did_newest_first(store) -> None:
    db = Database.open(store, Cipher(base64.b64decode(KEY)))
    with db.transaction():
        db.cancel(DeliverySelection(ids=(1,)), by="alice")
        db.record_action("bob", "reloaded", "channel files", "restarted lab")
    db.close()
    listed = courier(store, "store", "actions")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split()[1:] for line in listed.stdout.splitlines()[1:]]
    assert rows == [
        ["bob", "reloaded", "channel", "files", "restarted", "lab"],
        ["alice", "cancelled", "delivery", "1"],
    ]


def test_cli_requeue_cancel_and_skip_are_recorded_as_the_login_s_operator_actions(store) -> None:
    """As the console's: in the store's operators' actions, and a requeue or cancel in the
    delivery's timeline too, by ``cli:`` and the login name (getpass reads LOGNAME first)."""
    db = Database.open(store, Cipher(base64.b64decode(KEY)))
    with db.transaction():
        item = db.outbox_add("lab", "tcp:host=127.0.0.1:port=9", RAW, "S1")
    db.close()
    as_ward_ops = {"LOGNAME": "ward-ops"}
    assert courier(store, "deliveries", "cancel", "1", **as_ward_ops).returncode == 0
    assert courier(store, "deliveries", "requeue", "--state", "CANCELLED", **as_ward_ops).returncode == 0
    assert (
        courier(store, "outbox", "skip", str(item), "--reason", "wrong feed", **as_ward_ops).returncode == 0
    )

    listed = courier(store, "store", "actions")
    assert listed.returncode == 0, listed.stderr
    rows = [" ".join(line.split()[1:]) for line in listed.stdout.splitlines()[1:]]  # after "when"
    assert rows == [
        f"cli:ward-ops skipped outbox item {item} skipped by operator cli:ward-ops: wrong feed",
        "cli:ward-ops requeued delivery 1",
        "cli:ward-ops cancelled delivery 1",
    ]
    timeline = courier(store, "status", "CTRL1", "--details").stdout.splitlines()
    assert [" ".join(line.split()[2:]) for line in timeline if "by operator" in line] == [
        "cancelled CANCELLED by operator cli:ward-ops",
        "requeued QUEUED by operator cli:ward-ops",
    ]
    assert (
        "skipped by operator cli:ward-ops: wrong feed" in courier(store, "outbox", "show", str(item)).stdout
    )


def test_the_cli_operator_is_the_uid_when_the_system_has_no_name_for_it(monkeypatch) -> None:
    from engine.commands import store_options

    def no_name() -> str:
        raise OSError("No username set in the environment")  # as getpass says from Python 3.13

    assert store_options.cli_operator() == f"cli:{getpass.getuser()}"
    monkeypatch.setattr(store_options.getpass, "getuser", no_name)
    assert store_options.cli_operator() == f"cli:{os.getuid()}"


def test_a_control_id_holding_control_characters_is_printed_escaped_in_every_table(store_location) -> None:
    """MSH-10 ``EVIL\\X0A\\...`` decodes to a line feed: it must not forge a table row, nor
    colour or reverse the terminal."""
    evil = "EVIL\n  999  FORGED ROW\x1b[31m\u202e"
    path = stored_message(store_location, Cipher(base64.b64decode(KEY)), evil, "LAB\x07")
    escaped = "EVIL\\n  999  FORGED ROW\\x1b[31m\\u202e"
    outputs = [
        courier(path, "messages", "list"),
        courier(path, "messages", "show", "1"),
        courier(path, "deliveries", "list"),
        courier(path, "deliveries", "show", "1"),
        courier(path, "status", evil),
    ]
    for result in outputs:
        assert result.returncode == 0, result.stderr
        assert escaped in result.stdout
        assert "\x1b" not in result.stdout and "\u202e" not in result.stdout and "\x07" not in result.stdout
        assert not any(line.lstrip().startswith("999") for line in result.stdout.splitlines())


def test_the_store_can_come_from_the_environment_and_a_url_s_password_is_never_printed(postgres_url) -> None:
    stored_message(postgres_url, Cipher(base64.b64decode(KEY)))
    env = dict(os.environ, COURIER_STORE_KEY=KEY, COURIER_STORE_URL=postgres_url)
    listing = subprocess.run(
        [sys.executable, "-m", "engine", "messages", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert listing.returncode == 0 and "CTRL1" in listing.stdout, listing.stderr

    wrong = postgres_url.replace("courier@", "courier:hunter2@").replace("/test_", "/missing_")
    refused = courier(wrong, "messages", "list")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "hunter2" not in refused.stderr and "Traceback" not in refused.stderr
