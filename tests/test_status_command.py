"""``courier status``: one message's deliveries and timeline, from a real store file, no PHI."""

from __future__ import annotations

import time

from engine.cli import build_parser
from engine.commands import status
from engine.store import Cipher, Database, Incoming, load_or_create_key

ORU = b"MSH|^~\\&|LIS|LAB|COURIER|HOSP|20240131120000||ORU^R01|LAB0001|P|2.5.1\rPID|1||123||DOE^JANE\r"


def make_store(tmp_path):
    key_file, path = tmp_path / "store.key", tmp_path / "courier.sqlite3"
    db = Database.open(path, Cipher(load_or_create_key(env={}, key_file=key_file)))
    now = time.time()
    with db.transaction():
        db.receive(
            Incoming(
                channel="lis-oru",
                raw=ORU,
                sending_application="LIS",
                sending_facility="LAB",
                control_id="LAB0001",
                message_type="ORU^R01",
                received_at=now,
                peer="127.0.0.1",
                destinations=("gp-conneqt", "gp-direct"),
            )
        )
    with db.transaction():
        claimed = {d.destination: d for d in db.claim_due("gp-conneqt", now, 1, 60)}
        claimed |= {d.destination: d for d in db.claim_due("gp-direct", now, 1, 60)}
    with db.transaction():
        db.mark_sent(claimed["gp-conneqt"].id, "v-77")
    with db.transaction():
        db.set_state(claimed["gp-conneqt"].id, "DELIVERED", "delivered (DOE JANE's phone)")
        db.mark_error(claimed["gp-direct"].id, "rejected: HTTP 400")
    db.close()
    return ["--store", str(path), "--key-file", str(key_file)]


def run(argv, capsys, monkeypatch):
    monkeypatch.delenv("COURIER_STORE_KEY", raising=False)
    args = build_parser().parse_args(["status", *argv])
    code = status.run(args)
    return code, capsys.readouterr().out


def test_shows_every_destination_and_event_without_details(tmp_path, capsys, monkeypatch):
    store_args = make_store(tmp_path)
    code, out = run(["LAB0001", *store_args], capsys, monkeypatch)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("LAB0001  ORU^R01  channel lis-oru")
    conneqt = next(line for line in lines if line.split()[1:2] == ["gp-conneqt"])
    assert conneqt.split()[2] == "DELIVERED" and conneqt.endswith("v-77")
    direct = next(line for line in lines if line.split()[1:2] == ["gp-direct"])
    assert direct.split()[2] == "ERROR"
    header = next(i for i, line in enumerate(lines) if line.startswith("when"))
    timeline = [line.split()[1:3] for line in lines[header + 1 :]]
    assert [e for where, e in timeline if where == "gp-conneqt"] == ["queued", "claimed", "sent", "status"]
    assert [e for where, e in timeline if where == "gp-direct"] == ["queued", "claimed", "error"]
    assert "DOE" not in out and "HTTP 400" not in out


def test_details_only_when_asked(tmp_path, capsys, monkeypatch):
    store_args = make_store(tmp_path)
    _, out = run(["LAB0001", "--details", *store_args], capsys, monkeypatch)
    assert "last error: rejected: HTTP 400" in out


def test_unknown_control_id(tmp_path, capsys, monkeypatch):
    store_args = make_store(tmp_path)
    code, out = run(["NOPE", *store_args], capsys, monkeypatch)
    assert code == 1 and "no message" in out
