"""Contract tests: each request Courier makes, compared with the vendor document's example.

A request kind is a driver (Courier's own code making the request) and a fixture written from
the document (``fixtures/<vendor>/<kind>.json``, with where in the document it comes from).
The recorder answers with the document's example answer. See :mod:`tests.contract.shape`.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from engine.destinations import DestinationError, Outcome
from tests.contract import drive
from tests.contract.shape import differences, load_fixture
from tests.support.recording_server import Canned, Recorded, RecordingServer
from tests.support.subprocess_engine import free_port

STORE_KEY = base64.b64encode(b"contract-test-key-not-secret-32b").decode()
PDF = base64.b64encode(b"%PDF-1.4 contract test").decode()
CONNEQT_TOKEN = "ad2ae93e-f2e4-4722-8c20-42ba5a71b3ff"  # the document's example AccessToken


def send(kind: str, payload: dict[str, Any], token: str | None = None) -> Callable[[str], Any]:
    """Send ``payload``; the document's example answer must read as accepted."""

    def run(url: str) -> Any:
        result = drive.destination(kind, url, token).send(payload, idempotency_key="contract-1")
        assert result.outcome is Outcome.ACCEPTED, result.loggable_reason

    return run


def send_sample(kind: str, sample: str, token: str | None = None) -> Callable[[str], Any]:
    """A sample message through the example channel's mapping, then sent."""
    return lambda url: send(kind, drive.example_payload(kind, sample), token)(url)


def check_status(kind: str, remote_id: str, token: str | None = None) -> Callable[[str], Any]:
    def run(url: str) -> Any:
        try:
            return drive.destination(kind, url, token).check_status(remote_id)
        except DestinationError:
            return None  # an https URL through the proxy is refused; its host is recorded

    return run


QLIQ_MESSAGE = {
    "to": "oncall@example.org",
    "from": "ward@example.org",
    "subject": "Discharge",
    "text": "Ready",
}
QLIQ_PDF = {"content_type": "application/pdf", "file_name": "s.pdf", "base64": PDF}
CONNEQT_MESSAGE = {
    "topic": "LabResult",
    "recipientId": "GPPRAC001",
    "nhsNumber": "9434765919",
    "bodyContent": "Final report attached",
    "expiryDateTime": "2099-01-01T00:00:00Z",
    "attachments": [{"mimeType": "application/pdf", "fileName": "report.pdf", "content": PDF}],
    "codedDataItems": [{"code": "407554009", "value": "140", "unit": "mmHg", "additionalText": "Systolic"}],
}
MEDALLIES_MESSAGE = {
    "toDirectAddress": "smith@medalliestestdomain.com",
    "messageSubject": "Radiology report",
    "messageBody": "Report attached",
    "patientId": "22943847",
    "patientLastname": "Doe",
    "emailAttachmentList": [
        {"attachmentClass": "application/pdf", "attachmentContent": PDF, "attachmentTitle": "Report"}
    ],
}
KPN_MESSAGE = {"chat_type": "groupchat", "aux_id": "ward-7", "body": "New discharge letter"}
KPN_ATTACHMENT = {"file_name": "letter.pdf", "mime_type": "application/pdf", "content": PDF}


def qliq_replies(call: str) -> Callable[[str], Any]:
    """The reply API as ``engine.destinations.qliq.webhooks.reply_inbox`` builds it from the channel."""
    from engine.destinations.qliq.replies import QliqReplyApi, QliqReplySettings, Reply

    def run(url: str) -> Any:
        s = drive.example_settings("qliq")
        # replies need a reply_sender (courier check requires it): the curl example's
        sender = s["reply_sender"] or "test@test.com"
        settings = QliqReplySettings(
            channel="ehr-mdm-to-qliq", base_url=s["base_url"], api_key=s["api_key"], sender=sender
        )
        api = QliqReplyApi(drive.proxied_session(url), settings)
        if call == "mark_opened":
            return api.mark_opened(
                Reply("65e314a805c3541ac62284177fa05065", "4f23a82f5c28ee1288b78f3f3ada2555", "")
            )
        return api.replies_since("2018-01-17T00:00:00Z")

    return run


def courier(recorder_url: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """A ``courier`` command as an operator runs it, its HTTP going through the recorder."""
    env = dict(
        os.environ,
        **drive.ENV,
        COURIER_STORE_KEY=STORE_KEY,
        HTTP_PROXY=recorder_url,
        HTTPS_PROXY=recorder_url,
        NO_PROXY="",
    )
    return subprocess.run(
        [sys.executable, "-m", "engine", *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def kpn_test_channel(directory: Path) -> Path:
    """The example KPN channel with its redirect_uri on a free loopback port."""
    text = (drive.ROOT / "channels" / drive.EXAMPLE_CHANNELS["kpn"]).read_text()
    text = text.replace("../mappings/", f"{drive.ROOT / 'mappings'}/")
    redirect = f'redirect_uri = "http://127.0.0.1:{free_port()}/callback"'
    channel = directory / "kpn.toml"
    channel.write_text(text.replace("[destinations.settings]", f"[destinations.settings]\n  {redirect}", 1))
    return channel


def kpn_oauth_answers(request: Recorded) -> Canned:
    """The documented answers: a redirect to redirect_uri with code and state, then the token."""
    if request.authority.startswith("127.0.0.1:"):
        # requests keeps the proxy for a redirect whatever NO_PROXY says: pass it on to
        # Courier's own loopback receiver, as a proxy does
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request.target) as answer:
            return Canned(answer.status, answer.read())
    if request.path.endswith("/authorize"):
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.target).query).items()}
        location = f"{query['redirect_uri']}?{urlencode({'code': 'generated-code', 'state': query['state']})}"
        return Canned(302, b"", {"Location": location})
    return Canned(200, load_fixture("kpn/token")["response"]["body"])


CASES: dict[str, tuple[str, Callable[..., Any]]] = {
    # id: (fixture, driver)
    "qliq-send": ("qliq/send", send("qliq", QLIQ_MESSAGE)),
    "qliq-send-attachment": (
        "qliq/send_attachment",
        send("qliq", {**QLIQ_MESSAGE, "attachments": [QLIQ_PDF]}),
    ),
    "qliq-send-two-attachments": (  # the second one follows in the first one's conversation
        "qliq/send_attachment",
        send("qliq", {**QLIQ_MESSAGE, "attachments": [QLIQ_PDF, {**QLIQ_PDF, "file_name": "t.pdf"}]}),
    ),
    "qliq-send-example-channel": (
        "qliq/send_attachment",
        send_sample("qliq", "mdm_t02_discharge_summary.hl7"),
    ),
    "qliq-message-status": ("qliq/message_status", check_status("qliq", "cb644eb71a88db57f639db5490626cc6")),
    "qliq-update-message-status": ("qliq/update_message_status", qliq_replies("mark_opened")),
    "qliq-get-replies": ("qliq/get_replies", qliq_replies("replies_since")),
    "conneqt-send": (
        "conneqt/send",
        send("conneqt", CONNEQT_MESSAGE, token=CONNEQT_TOKEN),
    ),
    "conneqt-send-example-channel": (
        "conneqt/send",
        send_sample("conneqt", "oru_r01_lab_fbc_pdf.hl7", token=CONNEQT_TOKEN),
    ),
    "conneqt-status": (
        "conneqt/status",
        check_status("conneqt", "869c3439-fcb8-4546-b372-2af2bf54e197", token=CONNEQT_TOKEN),
    ),
    "medallies-send": ("medallies/send", send("medallies", MEDALLIES_MESSAGE)),
    "medallies-send-example-channel": (
        "medallies/send",
        send_sample("medallies", "oru_r01_radiology_mri.hl7"),
    ),
    "medallies-status": (
        "medallies/status",
        check_status("medallies", "urn:uuid:f729433a-7b5e-11ea-83f9-852dc7282913"),
    ),
    "kpn-send": ("kpn/api_call", send("kpn", KPN_MESSAGE, token="generated-access-token")),
    "kpn-send-attachment": (
        "kpn/api_call_attachments",
        send("kpn", {**KPN_MESSAGE, "attachments": [KPN_ATTACHMENT]}, token="generated-access-token"),
    ),
    "kpn-send-example-channel": (
        "kpn/api_call_attachments",
        send_sample("kpn", "mdm_t02_discharge_summary.hl7", token="generated-access-token"),
    ),
}


def answer_of(fixture: dict[str, Any]) -> Canned:
    response = fixture.get("response", {})
    return Canned(response.get("status", 200), response.get("body"))


def assert_matches(recorded: list[Recorded], fixture_name: str) -> None:
    assert recorded, "Courier sent nothing"
    fixture = load_fixture(fixture_name)
    found = {i: differences(r, fixture) for i, r in enumerate(recorded)}
    assert all(not d for d in found.values()), f"{fixture_name} ({fixture['source']}): {found}"


@pytest.mark.parametrize("case", list(CASES))
def test_request_matches_the_document(case):
    fixture_name, run = CASES[case]
    with RecordingServer(answer_of(load_fixture(fixture_name))) as recorder:
        run(recorder.url)
    assert_matches(recorder.requests, fixture_name)


def test_courier_qliq_keys_upload_matches_the_document(tmp_path):
    with RecordingServer(answer_of(load_fixture("qliq/set_sender_pubkey"))) as recorder:
        argv = ["qliq", "keys", "--sender", "ward@example.org", "--base-url", drive.ENV["QLIQ_BASE_URL"]]
        done = courier(recorder.url, *argv, "--key-file", str(tmp_path / "reply.pem"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_matches(recorder.requests, "qliq/set_sender_pubkey")


def test_courier_kpn_authorize_matches_the_document(tmp_path):
    """``courier kpn authorize --auto``: the authorization URL, the redirect, the token exchange."""
    channel = kpn_test_channel(tmp_path)
    with RecordingServer(kpn_oauth_answers) as recorder:
        argv = ["kpn", "authorize", str(channel), "ward-kpn", "--auto", "--timeout", "20"]
        done = courier(recorder.url, *argv, "--store", str(tmp_path / "courier.db"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    authorize, exchange = (r for r in recorder.requests if not r.authority.startswith("127.0.0.1:"))
    assert differences(authorize, load_fixture("kpn/authorize")) == []
    assert differences(exchange, load_fixture("kpn/token")) == []
