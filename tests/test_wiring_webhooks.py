"""The vendor webhooks served by the running engine, reached by the sandboxes over HTTP.

The example MedAllies and Qliq channels run in one engine with ``webhook_endpoint``, started
as ``courier run --sandbox --webhooks`` starts it: the sandboxes accept the random credentials
of ``var/sandbox/credentials.json``, the channels' unset secret variables take them, and the
sandboxes are pointed at the engine. A MedAllies DSN
moves the delivery to DELIVERED (status polling is off, so only the webhook can), an inbound
Direct message and a Qliq reply reach the hospital as MDM^T02.
"""

from __future__ import annotations

import json
import queue
from dataclasses import replace

import pytest
import requests

from courier_sandbox import DEFAULT_PORTS, start_sandboxes
from courier_sandbox.certs import make_certificates
from courier_sandbox.credentials import load_or_create
from courier_sandbox.qliq_crypto import rsa_encrypt_chunked
from engine.channel.config import StatusReports
from engine.commands.run import point_sandboxes_at_webhooks
from engine.destinations.qliq.keys import generate_key_pair, load_private_key, upload_public_key
from engine.message.batch import split_file
from engine.service import build_engine
from engine.store.base import DELIVERED, SENT
from engine.tls import TLSSettings
from tests.conftest import on_reactor
from tests.support.e2e import load_against_sandboxes
from tests.support.engine import open_store
from tests.support.hospital import Hospital
from tests.support.mllp import BlockingClient
from tests.test_delivery_queue import wait_for
from tests.test_wiring_requeue import REPO

QLIQ_SENDER = "poc@sandbox.qliq"  # the sandbox's point of contact: the example mapping sets no from
PATH_TOKEN = "Hx4mQ9vTz2Lp7Rw3Kc8Bn5"  # 22 random URL-safe characters (128 bits)


def sample(name: str) -> bytes:
    return split_file((REPO / "sample_messages" / name).read_bytes())[0]


@pytest.fixture
def sandboxes(reactor, tmp_path):
    free_ports = dict.fromkeys(DEFAULT_PORTS, 0)
    credentials = load_or_create(tmp_path / "var" / "sandbox" / "credentials.json")
    started = on_reactor(start_sandboxes, reactor, credentials=credentials, ports=free_ports)
    started.medallies.configure({"processed_after_s": 0.05, "dispatched_after_s": 0.1})
    started.qliq.configure({"delivered_after_s": None, "read_after_s": None})
    yield started
    on_reactor(started.stop)


@pytest.fixture
def hospital(reactor):
    listening = Hospital(reactor).up()
    yield listening
    listening.down()


def example_channel(name: str, sandboxes, hospital, **settings):
    (channel,) = load_against_sandboxes([REPO / "channels" / name], sandboxes)
    (destination,) = channel.destinations
    destination = replace(
        destination,
        settings={**destination.settings, **settings},
        status=replace(destination.status, poll=False),
    )
    reports = StatusReports(
        to=f"tcp:host=127.0.0.1:port={hospital.port}",
        events=("delivered", "failed"),
        connect_timeout_s=5.0,
        ack_timeout_s=5.0,
        tls=None,
    )
    return replace(
        channel,
        source=replace(channel.source, listen="tcp:0:interface=127.0.0.1"),
        destinations=(destination,),
        status_reports=reports,
    )


@pytest.fixture
def engine(reactor, tmp_path, sandboxes, hospital):
    key_file = tmp_path / "qliq_reply_key.pem"
    public_pem = generate_key_pair(key_file)
    with requests.Session() as session:
        upload_public_key(
            session, sandboxes.qliq.base_url, sandboxes.credentials.qliq_api_key, QLIQ_SENDER, public_pem
        )
    channels = [
        example_channel("ris_oru_to_medallies.toml", sandboxes, hospital),
        example_channel(
            "ehr_mdm_to_qliq.toml",
            sandboxes,
            hospital,
            reply_key_file=key_file,
            reply_sender=QLIQ_SENDER,
            reply_webhook_token=PATH_TOKEN,
            poll_replies_s=1.0,
        ),
    ]
    store = open_store(reactor, tmp_path / "courier.sqlite3", durability="normal")
    running = build_engine(reactor, channels, store, webhook_endpoint="tcp:0:interface=127.0.0.1")
    on_reactor(running.start)
    point_sandboxes_at_webhooks(sandboxes, running)
    running.store = store
    yield running
    on_reactor(running.stop)
    on_reactor(store.close)


def send(engine, channel: str, raw: bytes) -> None:
    with BlockingClient(engine.port(channel)) as client:
        client.request(raw)


def delivery_in(engine, destination: str, state: str):
    found = on_reactor(engine.store.list_deliveries, destination=destination, state=state)
    return found[0] if found else None


def next_document(hospital: Hospital, timeout: float = 15.0):
    """The next MDM^T02 the hospital got (status reports in between are skipped)."""
    while True:
        try:
            message = hospital.next(timeout)
        except queue.Empty:
            raise AssertionError("no MDM^T02 reached the hospital") from None
        if message.msh.field(9).startswith("MDM^T02"):
            return message


def test_the_urls_follow_the_documented_scheme(engine):
    assert sorted(engine.webhook_resources) == [
        "medallies/ris-oru-to-medallies/referrers-direct/dsn",
        "medallies/ris-oru-to-medallies/referrers-direct/inbound",
        f"qliq/ehr-mdm-to-qliq/care-team-qliq/{PATH_TOKEN}/replies",
    ]


def test_without_status_reports_no_qliq_reply_webhook_or_poller_is_set_up(
    reactor, tmp_path, sandboxes, hospital, caplog
):
    """Replies could only fail there (no outbox to file them in), and Qliq would resend forever."""
    channel = example_channel(
        "ehr_mdm_to_qliq.toml",
        sandboxes,
        hospital,
        reply_key_file=tmp_path / "none.pem",
        reply_sender=QLIQ_SENDER,
        reply_webhook_token=PATH_TOKEN,
        poll_replies_s=1.0,
    )
    store = open_store(reactor, tmp_path / "no-reports.sqlite3", durability="normal")
    with caplog.at_level("WARNING"):
        running = build_engine(
            reactor,
            [replace(channel, status_reports=None)],
            store,
            hold_deliveries=True,
            webhook_endpoint="tcp:0:interface=127.0.0.1",
        )
    try:
        assert running.webhook_resources == {}
        assert "Qliq replies are not fetched" in caplog.text
    finally:
        on_reactor(store.close)


def test_a_medallies_dsn_moves_the_delivery_to_delivered(engine, sandboxes):
    send(engine, "ris-oru-to-medallies", sample("oru_r01_radiology_mri.hl7"))
    delivered = wait_for(lambda: delivery_in(engine, "referrers-direct", DELIVERED), 10, "DELIVERED")

    def answered_dsns():
        dsns = [w for w in sandboxes.medallies.state.webhooks if w["kind"] == "dsn"]
        return dsns if dsns and all("status" in w or "error" in w for w in dsns) else None

    assert all(w.get("status") == 200 for w in wait_for(answered_dsns, 5, "the DSN answers"))
    assert delivered.remote_id
    assert not any("/dirmsg/status" in r.path for r in sandboxes.medallies.state.requests)


def from_outside(document, vendor: str, route: str, caplog) -> bool:
    """The document names Courier and the vendor (MSH-3, MSH-4) and its route (ZIN-7), and its
    arrival was logged with the route and the caller's address, without its text."""
    logged = [r.getMessage() for r in caplog.records if r.name == "engine.status.documents"]
    return (
        (document.get("MSH-3"), document.get("MSH-4"), document.get("ZIN-7")) == ("COURIER", vendor, route)
        and any(f"via {route} from 127.0.0.1: queued for the hospital" in line for line in logged)
        and not any(document.get("OBX-5") in line for line in logged)
    )


def test_an_inbound_direct_message_reaches_the_hospital(engine, sandboxes, hospital, caplog):
    with caplog.at_level("INFO", logger="engine.status.documents"):
        entry = on_reactor(sandboxes.medallies.send_inbound, {"messageBody": "Please see the patient"})
        assert entry["status"] == 200
        document = next_document(hospital)
    assert document.get("TXA-12") == entry["messageId"]
    assert "Please see the patient" in document.get("OBX-5")
    assert from_outside(
        document, "medallies", "medallies/ris-oru-to-medallies/referrers-direct/inbound", caplog
    )


def test_a_qliq_reply_answers_the_original_message(engine, sandboxes, hospital, caplog):
    raw = sample("mdm_t02_discharge_summary.hl7")
    send(engine, "ehr-mdm-to-qliq", raw)
    wait_for(lambda: delivery_in(engine, "care-team-qliq", SENT), 10, "SENT to Qliq")
    (qliq_message_id,) = sandboxes.qliq.state.messages
    with caplog.at_level("INFO", logger="engine.status.documents"):
        entry = on_reactor(sandboxes.qliq.reply, qliq_message_id, "Seen, thanks")
        assert entry["status"] == 200
        document = next_document(hospital)
    assert document.get("TXA-13") == "EPR-T02-0002"  # the discharge summary's control id
    assert document.get("PID-3.1") == "E4445556"
    assert from_outside(document, "qliq", "qliq/ehr-mdm-to-qliq/care-team-qliq/replies", caplog)
    assert PATH_TOKEN not in caplog.text


def test_a_reply_forged_with_the_public_key_does_not_get_past_the_path_token(engine, hospital, tmp_path):
    public = load_private_key(tmp_path / "qliq_reply_key.pem").public_key()  # published: anyone has it
    forged = {"conversationUuid": "c1", "messageId": "m1", "text": "Discharge cancelled"}
    ciphertext = rsa_encrypt_chunked(public, json.dumps({"Message": {"Data": forged}}).encode())
    base = f"http://127.0.0.1:{engine.webhook_port()}/qliq/ehr-mdm-to-qliq/care-team-qliq"
    for url in (f"{base}/replies", f"{base}/{PATH_TOKEN[:-2]}xx/replies"):
        answer = requests.post(url, data={"message_id": "m1"}, files={"message": ciphertext}, timeout=5)
        assert answer.status_code == 404
    assert hospital.nothing_more(wait=0.5)


def test_a_reply_the_webhook_missed_is_fetched_by_the_poller(engine, sandboxes, hospital):
    send(engine, "ehr-mdm-to-qliq", sample("mdm_t02_discharge_summary.hl7"))
    wait_for(lambda: delivery_in(engine, "care-team-qliq", SENT), 10, "SENT to Qliq")
    (qliq_message_id,) = sandboxes.qliq.state.messages
    sandboxes.qliq.configure({"reply_url": "http://127.0.0.1:1/webhook-down"})
    entry = on_reactor(sandboxes.qliq.reply, qliq_message_id, "Replying while you were down")
    assert entry.get("status") != 200
    document = next_document(hospital, timeout=15.0)  # the poller asks every second
    assert document.get("TXA-13") == "EPR-T02-0002"
    assert "while you were down" in document.get("OBX-5")
    assert document.get("ZIN-7") == "qliq/ehr-mdm-to-qliq/care-team-qliq/get_replies"


def test_webhooks_refuse_callers_without_the_secret(engine):
    base = f"http://127.0.0.1:{engine.webhook_port()}"
    dsn = f"{base}/medallies/ris-oru-to-medallies/referrers-direct/dsn"
    assert requests.post(dsn, json={"Id": "x"}, timeout=5).status_code == 401
    assert requests.post(dsn, json={"Id": "x"}, auth=("medallies", "wrong"), timeout=5).status_code == 401
    no_token = f"{base}/qliq/ehr-mdm-to-qliq/care-team-qliq/replies"
    assert requests.post(no_token, data={"message": "x"}, timeout=5).status_code == 404


OLD_PUBLIC_CREDENTIAL = ("medallies", "sandbox-inbound-secret")
"""What the example MedAllies channel fell back to before issue 9: anyone could read it."""


def test_the_old_public_credential_forges_nothing_and_the_sandboxes_own_still_works(
    engine, sandboxes, hospital
):
    """Issue 9: a stranger POSTed an MDM^T02 ("stop warfarin") into the hospital's feed with the
    example channel's public default secret; the DSN route took it too."""
    base = f"http://127.0.0.1:{engine.webhook_port()}/medallies/ris-oru-to-medallies/referrers-direct"
    forged = {
        "fromDirectAddress": "referrer@medalliestestdomain.com",
        "toDirectAddress": "courier@medalliestestdomain.com",
        "emailAttachmentList": [],
        "messageBody": "URGENT: stop warfarin",
        "messageId": "urn:uuid:00000000-0000-4000-8000-000000000009",
        "messageSubject": "Referral",
        "xdm": False,
        "asmEnabled": True,
    }
    dsn = {"Id": "urn:uuid:unknown", "Disposition": "automatic-action/MDN-sent-automatically; processed"}
    inbound = requests.post(f"{base}/inbound", json=forged, auth=OLD_PUBLIC_CREDENTIAL, timeout=5)
    assert inbound.status_code == 401
    assert requests.post(f"{base}/dsn", json=dsn, auth=OLD_PUBLIC_CREDENTIAL, timeout=5).status_code == 401
    assert hospital.nothing_more(wait=1.0)

    entry = on_reactor(sandboxes.medallies.send_inbound, {"messageBody": "Genuine referral"})
    assert entry["status"] == 200
    assert "Genuine referral" in next_document(hospital).get("OBX-5")
    genuine = ("medallies", sandboxes.credentials.medallies_webhook_secret)
    assert requests.post(f"{base}/dsn", json=dsn, auth=genuine, timeout=5).status_code == 200


def test_webhooks_over_tls(reactor, tmp_path, sandboxes, hospital):
    certs = make_certificates(tmp_path / "certs")
    channel = example_channel("ris_oru_to_medallies.toml", sandboxes, hospital, webhook_secret="hook-secret")
    store = open_store(reactor, tmp_path / "tls.sqlite3", durability="normal")
    running = build_engine(
        reactor,
        [channel],
        store,
        hold_deliveries=True,
        webhook_endpoint="tcp:0:interface=127.0.0.1",
        webhook_tls=TLSSettings(certs.server_cert, certs.server_key),
    )
    on_reactor(running.start)
    try:
        url = (
            f"https://localhost:{running.webhook_port()}/medallies/ris-oru-to-medallies/referrers-direct/dsn"
        )
        dsn = {"Id": "urn:uuid:unknown", "Disposition": "automatic-action/MDN-sent-automatically; processed"}
        answer = requests.post(
            url, json=dsn, auth=("medallies", "hook-secret"), verify=str(certs.ca_cert), timeout=5
        )
        assert answer.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(url, json=dsn, timeout=5)  # a client that does not trust our CA
    finally:
        on_reactor(running.stop)
        on_reactor(store.close)


def test_sandboxes_are_pointed_at_https_when_the_webhook_endpoint_is_ssl(
    reactor, tmp_path, sandboxes, hospital
):
    certs = make_certificates(tmp_path / "certs")
    channel = example_channel("ris_oru_to_medallies.toml", sandboxes, hospital, webhook_secret="hook-secret")
    store = open_store(reactor, tmp_path / "ssl.sqlite3", durability="normal")
    endpoint = f"ssl:0:interface=127.0.0.1:privateKey={certs.server_key}:certKey={certs.server_cert}"
    running = build_engine(reactor, [channel], store, hold_deliveries=True, webhook_endpoint=endpoint)
    on_reactor(running.start)
    try:
        point_sandboxes_at_webhooks(sandboxes, running)
        assert sandboxes.medallies.dsn_url == (
            f"https://127.0.0.1:{running.webhook_port()}/medallies/ris-oru-to-medallies/referrers-direct/dsn"
        )
    finally:
        on_reactor(running.stop)
        on_reactor(store.close)
