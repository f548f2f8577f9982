"""``type = "http"`` end to end, as an operator runs it: ``courier check`` and ``courier run`` as
child processes, MLLP in, a signed JSON POST to a plain recording HTTP server and to its own
sandbox (``courier run --sandbox``), retries, a dead letter, and the outcomes back as HL7 to the
sending system's listener."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from courier_sandbox import DEFAULT_PORTS
from tests.support.e2e import with_msh
from tests.support.hospital import Hospital
from tests.support.mllp import BlockingClient
from tests.support.scripted_http import Reply, ScriptedServer
from tests.support.subprocess_engine import STORE_KEY, courier, free_port, listening
from tests.support.waiting import wait_for

SECRET = "hook secret known to the test only"

CHANNEL = """
name = "lab-to-hook"
[source]
listen = "tcp:{port}:interface=127.0.0.1"
[source.filter]
message_types = ["ORU^R01"]
[[destinations]]
name = "results-hook"
type = "http"
mapping = "hook.toml"
  [destinations.settings]
  url = "{url}/hooks/results"
  auth = "hmac"
  signing_secret = "${{HOOK_SECRET}}"
  [destinations.retry]
  initial_delay_s = 0.2
  max_delay_s = 0.5
  jitter = 0
[status_reports]
to = "tcp:host=127.0.0.1:port={hospital}"
events = ["accepted", "failed"]
"""

MAPPING = """
input = ["ORU^R01"]
output = "http"
[fields]
messageId = "MSH-10"
test = "OBR-4.2"
"""

ORU = (
    b"MSH|^~\\&|LIS|CITYLAB|COURIER|CITYHOSP|20240131142501||ORU^R01|HT0001|P|2.5\r"
    b"PID|1||9434765919^^^NHS^NH||DOE^JANE\r"
    b"OBR|1||ORD1|GLU^Glucose\r"
)


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return courier(*args, cwd=cwd, env=dict(os.environ, COURIER_STORE_KEY=STORE_KEY, **(env or {})))


def finished(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out + err


@pytest.fixture
def hook() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def write_channel(tmp_path: Path, url: str, hospital: int = 9, **replace: str) -> int:
    port = free_port()
    text = CHANNEL.format(port=port, url=url, hospital=hospital)
    for old, new in replace.items():
        text = text.replace(old, new)
    (tmp_path / "hook.toml").write_text(MAPPING)
    (tmp_path / "hook-channel.toml").write_text(text)
    return port


def test_check_accepts_an_http_channel(tmp_path):
    write_channel(tmp_path, "https://hooks.example.org")
    assert finished(run("check", "hook-channel.toml", cwd=tmp_path, env={"HOOK_SECRET": "s"}))[0] == 0


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ('  url = "https://hooks.example.org/hooks/results"\n', "", "settings.url: missing required key"),
        ('"${HOOK_SECRET}"', '"hK7s9QmP2xV4bN8rT1"', "settings.signing_secret: looks like a literal secret"),
        ('  signing_secret = "${HOOK_SECRET}"\n', "", "settings.signing_secret: required when auth = 'hmac'"),
    ],
    ids=["no url", "literal secret", "no secret"],
)
def test_check_refuses_a_broken_http_channel(tmp_path, old, new, said):
    write_channel(tmp_path, "https://hooks.example.org", **{old: new})
    code, output = finished(run("check", "hook-channel.toml", cwd=tmp_path, env={"HOOK_SECRET": "s"}))
    assert code != 0 and said in output, output
    assert "Traceback" not in output


def deliveries_in(state: str, store: str, cwd: Path) -> int:
    """How many results-hook deliveries ``courier deliveries list --state STATE`` shows."""
    code, listed = finished(run("deliveries", "list", "--state", state, "--store", store, cwd=cwd))
    assert code == 0, listed
    return listed.count("results-hook")


def verified(request) -> bool:
    """The receiver's side of auth = "hmac": recompute the signature with the shared secret."""
    timestamp = request.headers["X-Courier-Timestamp"]
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    return hmac.compare_digest(request.headers["X-Courier-Signature"], "sha256=" + mac.hexdigest())


def test_mllp_in_signed_json_out_retries_dead_letters_and_statuses_back(tmp_path, hook, reactor):
    hospital = Hospital(reactor).up()
    port = write_channel(tmp_path, hook.base_url, hospital.port)
    store = str(tmp_path / "courier.sqlite3")
    engine = run("run", "hook-channel.toml", "--store", store, cwd=tmp_path, env={"HOOK_SECRET": SECRET})
    try:
        wait_for(lambda: listening(port, engine), timeout=30, what="courier run listening")
        with BlockingClient(port) as client:
            # accepted at once: signed, the mapping's output as the JSON body
            assert b"MSA|AA|HT0001" in client.request(ORU)
            [accepted] = hospital.wait_about("HT0001", 1)
            first = hook.received[0]
            assert first.json() == {"messageId": "HT0001", "test": "Glucose"} and verified(first)
            assert accepted.segment("MSA").value(1) == "AA"

            # a 500, then a 200: retried with the same idempotency key, then SENT
            hook.reply(Reply(500, {"error": "try later"}), Reply(200))
            assert b"MSA|AA|HT0002" in client.request(with_msh(ORU, control_id="HT0002"))
            [sent] = hospital.wait_about("HT0002", 1)
            retried = hook.received[1:]
            assert len(retried) == 2 and all(verified(r) for r in retried)
            assert retried[0].headers["Idempotency-Key"] == retried[1].headers["Idempotency-Key"]
            assert sent.segment("MSA").value(1) == "AA"

            # a 400: rejected for good, a dead letter, and the sending system told
            hook.reply(Reply(400, {"error": "unknown test code"}))
            assert b"MSA|AA|HT0003" in client.request(with_msh(ORU, control_id="HT0003"))
            [failed] = hospital.wait_about("HT0003", 1)
            assert failed.segment("MSA").value(1) == "AR"
            assert len(hook.received) == 4

            # a 404: the URL, not the message, is wrong: held (no AR), resumed once it answers
            hook.reply(Reply(404, {"error": "no such hook"}, {"Retry-After": "1"}))
            assert b"MSA|AA|HT0004" in client.request(with_msh(ORU, control_id="HT0004"))
            [resumed] = hospital.wait_about("HT0004", 1)
            assert resumed.segment("MSA").value(1) == "AA" and len(hook.received) == 6
        assert deliveries_in("ERROR", store, tmp_path) == 1
        assert deliveries_in("SENT", store, tmp_path) == 3
    finally:
        engine.terminate()
        out, err = engine.communicate(timeout=20)
        hospital.down()
    logs = out + err  # no secret and no vendor text (it can echo PHI) in the log
    assert SECRET not in logs and "unknown test code" not in logs and "no such hook" not in logs


def sandbox_call(base_url: str, what: str, **body) -> dict:
    answer = requests.request(
        "POST" if body else "GET", f"{base_url}/_sandbox/{what}", json=body or None, timeout=5
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_against_its_sandbox_signed_faulted_retried_and_dead_lettered(tmp_path, reactor):
    """``courier run --sandbox``: the unset HOOK_SECRET takes the receiver sandbox's signing
    secret, and the sandbox (not the test) verifies every signature."""
    hospital = Hospital(reactor).up()
    receiver = f"http://127.0.0.1:{free_port()}"
    port = write_channel(tmp_path, receiver, hospital.port)
    others = ",".join(f"{name}=0" for name in DEFAULT_PORTS if name != "http")
    ports = f"{others},http={receiver.rsplit(':', 1)[1]}"
    webhooks = f"tcp:{free_port()}:interface=127.0.0.1"
    store = str(tmp_path / "courier.sqlite3")
    environ = {k: v for k, v in os.environ.items() if k != "HOOK_SECRET"}
    engine = courier(
        "run",
        "hook-channel.toml",
        "--sandbox",
        "--sandbox-ports",
        ports,
        "--webhooks",
        webhooks,
        "--admin",
        f"tcp:{free_port()}:interface=127.0.0.1",
        "--store",
        store,
        cwd=tmp_path,
        env=dict(environ, COURIER_STORE_KEY=STORE_KEY),
    )
    try:
        wait_for(lambda: listening(port, engine), timeout=30, what="courier run listening")
        with BlockingClient(port) as client:
            assert b"MSA|AA|HT0001" in client.request(ORU)
            assert hospital.wait_about("HT0001", 1)[0].segment("MSA").value(1) == "AA"
            state = sandbox_call(receiver, "state")
            [message] = state["messages"].values()
            assert message["auth"] == "hmac" and message["body"] == {"messageId": "HT0001", "test": "Glucose"}
            assert (
                state["requests"][0]["method"] == "POST" and state["requests"][0]["path"] == "/hooks/results"
            )

            # 500 twice: retried, SENT, one message at the sandbox with the key of every attempt
            sandbox_call(receiver, "faults", fail_next=2)
            assert b"MSA|AA|HT0002" in client.request(with_msh(ORU, control_id="HT0002"))
            assert hospital.wait_about("HT0002", 1)[0].segment("MSA").value(1) == "AA"
            state = sandbox_call(receiver, "state")
            attempts = state["requests"][1:]
            assert [r["fault"] for r in attempts] == ["500", "500", None]
            assert len({r["headers"]["idempotency-key"] for r in attempts}) == 1
            assert len(state["messages"]) == 2

            # a 400: rejected for good, a dead letter, and AR to the sending system
            sandbox_call(receiver, "faults", status_next=1, status_code=400)
            assert b"MSA|AA|HT0003" in client.request(with_msh(ORU, control_id="HT0003"))
            assert hospital.wait_about("HT0003", 1)[0].segment("MSA").value(1) == "AR"
            assert len(sandbox_call(receiver, "state")["requests"]) == 5
        assert deliveries_in("ERROR", store, tmp_path) == 1
    finally:
        engine.terminate()
        out, err = engine.communicate(timeout=20)
        hospital.down()
    credentials = json.loads((tmp_path / "var" / "sandbox" / "credentials.json").read_text())
    assert "HOOK_SECRET is not set: using the sandbox's own credential" in err
    assert credentials["http_signing_secret"] not in out + err
