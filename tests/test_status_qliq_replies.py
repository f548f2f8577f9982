"""Qliq replies over real sockets: the sandbox encrypts with the key we uploaded, the webhook
decrypts, the hospital gets an MDM^T02; tampered or wrongly keyed replies are refused."""

from __future__ import annotations

import base64
import email
import json
import logging
import os
import stat
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet.defer import gatherResults

from courier_sandbox.http import Part
from courier_sandbox.qliq import QliqSandbox, QliqTimings
from courier_sandbox.qliq_crypto import rsa_encrypt_chunked
from engine.delivery.conversations import remember_conversation
from engine.destinations.qliq.keys import generate_key_pair, load_private_key, upload_public_key
from engine.destinations.qliq.replies import (
    AttachmentTooLarge,
    QliqApiError,
    QliqReplyApi,
    QliqReplySettings,
    Reply,
    ReplyInbox,
    ReplyPoller,
    ReplyWebhook,
)
from engine.status import webhook_server
from engine.status.documents import Origin
from engine.status.reporter import StatusReporter
from engine.status.webhooks import BasicAuth, Route
from tests.conftest import on_reactor
from tests.support.hospital import Hospital
from tests.support.sandbox import TEST_CREDENTIALS
from tests.support.scripted_http import Reply as ScriptedReply
from tests.support.waiting import wait_for
from tests.test_destinations_http import ScriptedServer
from tests.test_status_reporter import FAST, channel_file, receive, temporary_store

MDM = (
    b"MSH|^~\\&|EHR|HOSP|COURIER|HOSP|20240131120000+0000||MDM^T02^MDM_T02|DOC0042|P|2.5.1\r"
    b"EVN|T02|20240131120000\rPID|1||555^^^HOSP^MR||DOE^JANE\rPV1|1|I\r"
    b"TXA|1|DS|TX|||||||||DOC-1||||||AU\rOBX|1|TX|DS^Discharge summary^L||Home tomorrow||||||F\r"
)
US = "courier@sandbox.qliq"
PDF = b"%PDF-1.4 signed consent"
TOKEN = "q7Vd2Lx9Rk4Tz8Mw3Pb6Nf"  # 22 URL-safe characters: the shortest token the routes take
BY_TEST = Origin("qliq/test/replies", "test")


@pytest.fixture
def store(tmp_path, reactor):
    with temporary_store(tmp_path, reactor) as store:
        yield store


@pytest.fixture
def sandbox(reactor):
    sandbox = QliqSandbox(
        reactor, credentials=TEST_CREDENTIALS, timings=QliqTimings(delivered_after_s=None, read_after_s=None)
    )
    on_reactor(sandbox.listen)
    yield sandbox
    on_reactor(sandbox.stop)


@pytest.fixture
def courier(tmp_path, store, sandbox, reactor):
    """Courier's side: key pair uploaded, reporter, reply inbox and webhook, hospital listener."""
    hospital = Hospital(reactor).up()
    channel = channel_file("ehr_mdm_to_qliq.toml", hospital.port)
    key_file = tmp_path / "qliq" / "reply_key.pem"
    public_pem = generate_key_pair(key_file)
    session = requests.Session()
    upload_public_key(session, sandbox.base_url, TEST_CREDENTIALS.qliq_api_key, US, public_pem)
    reporter = StatusReporter(store, reactor, [channel], **FAST)
    on_reactor(reporter.start)
    settings = QliqReplySettings(
        channel=channel.name,
        base_url=sandbox.base_url,
        api_key=TEST_CREDENTIALS.qliq_api_key,
        sender=US,
        timeout_s=5,
    )
    inbox = ReplyInbox(store, reporter, reactor, QliqReplyApi(session, settings), "qliq/test")
    private_key = load_private_key(key_file)
    port = on_reactor(
        webhook_server.listen,
        reactor,
        "tcp:0:interface=127.0.0.1",
        [
            Route("qliq/reply", ReplyWebhook(inbox, private_key), token=TOKEN),
            Route("qliq/basic/reply", ReplyWebhook(inbox, private_key), BasicAuth("qliq", "hook-secret")),
        ],
    )
    base = f"http://127.0.0.1:{port.getHost().port}/qliq"
    sandbox.reply_url = f"{base}/{TOKEN}/reply"
    yield {
        "hospital": hospital,
        "channel": channel,
        "inbox": inbox,
        "url": sandbox.reply_url,
        "basic_url": f"{base}/basic/reply",
        "key_file": key_file,
    }
    on_reactor(port.stopListening)
    on_reactor(reporter.stop)
    hospital.down()


def send_and_remember(store, sandbox, channel) -> dict:
    """Send the discharge summary to Qliq as the dispatcher would, and note its conversation."""
    answer = requests.post(
        f"{sandbox.base_url}/secure_messages/send",
        timeout=5,
        data={
            "api_key": TEST_CREDENTIALS.qliq_api_key,
            "from": US,
            "to": "doctor@sandbox.qliq",
            "subject": "Discharge",
            "text": "Discharge summary",
        },
    ).json()
    message_id = receive(store, channel, MDM)
    on_reactor(remember_conversation, store, "qliq", answer["conversation_id"], channel.name, message_id)
    return answer


def test_key_file_is_private(courier):
    assert stat.S_IMODE(os.stat(courier["key_file"]).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        generate_key_pair(courier["key_file"])


def test_passphrase_protected_key_needs_its_passphrase(tmp_path):
    key_file = tmp_path / "key.pem"
    generate_key_pair(key_file, passphrase=b"correct horse")
    assert load_private_key(key_file, b"correct horse").key_size == 2048
    with pytest.raises((ValueError, TypeError)):
        load_private_key(key_file, b"wrong")


def test_reply_with_attachment_reaches_the_hospital_as_mdm_t02(courier, store, sandbox):
    sent = send_and_remember(store, sandbox, courier["channel"])
    attachment = Part("attachment", "consent.pdf", "application/pdf", PDF)
    entry = on_reactor(
        sandbox.reply, sent["message_id"], "Seen, will call the patient\nDr. Who", attachment=attachment
    )
    assert entry["status"] == 200
    message = courier["hospital"].next()
    assert message.msh.field(9) == "MDM^T02^MDM_T02"
    assert (message.receiving_application, message.receiving_facility) == ("EHR", "HOSP")
    assert message.get("PID-3.1") == "555" and message.get("PV1-2") == "I"
    assert message.get("TXA-12") == entry["message_id"]
    assert message.get("TXA-13") == "DOC0042"
    assert message.get("OBX-5") == "Seen, will call the patient\nDr. Who"
    ed = message.segment("OBX", 2)
    assert ed.value(2) == "ED" and ed.value(3, component=2) == "consent.pdf"
    assert ed.value(5, component=3) == "PDF" and ed.value(5, component=4) == "Base64"
    assert base64.b64decode(ed.value(5, component=5)) == PDF
    assert message.get("ZIN-3") == sent["conversation_id"]
    wait_for(lambda: sandbox.replies[entry["message_id"]]["status"] == "read")


def test_a_repeated_post_is_filed_once(courier, store, sandbox):
    sent = send_and_remember(store, sandbox, courier["channel"])
    reply_id = on_reactor(sandbox.reply, sent["message_id"], "ok")["message_id"]
    courier["hospital"].next()
    record = sandbox.replies[reply_id]
    assert on_reactor(courier["inbox"].file, _reply_like(record), BY_TEST) is False
    assert courier["hospital"].nothing_more()


def test_the_webhook_and_the_poller_bringing_one_reply_at_once_file_it_once(courier, store, sandbox):
    sandbox.reply_url = "http://127.0.0.1:9/down"  # the test brings the reply itself, twice
    sent = send_and_remember(store, sandbox, courier["channel"])
    reply_id = on_reactor(sandbox.reply, sent["message_id"], "ok")["message_id"]
    reply = _reply_like(sandbox.replies[reply_id])
    inbox = courier["inbox"]

    def both():
        return gatherResults([inbox.file(reply, BY_TEST), inbox.file(reply, BY_TEST)])

    assert sorted(on_reactor(both)) == [False, True]
    courier["hospital"].next()
    assert courier["hospital"].nothing_more()


def _reply_like(record):
    return Reply(record["conversation_id"], record["message_id"], record["reply"])


def post_reply(url, ciphertext: str, message_id: str = "m1", auth=None):
    return requests.post(
        url,
        auth=auth,
        timeout=5,
        data={"conversation_id": "c1", "message_id": message_id},
        files={"message": ("message", ciphertext.encode(), "text/plain")},
    )


def reply_json(message_id: str = "m1") -> bytes:
    return json.dumps(
        {
            "Message": {
                "Data": {"conversationUuid": "c1", "messageId": message_id, "text": "secret clinical text"}
            }
        }
    ).encode()


def test_wrongly_keyed_reply_is_refused_with_a_log_line(courier, caplog):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with caplog.at_level(logging.WARNING):
        answer = post_reply(courier["url"], rsa_encrypt_chunked(other, reply_json()))
    assert answer.status_code == 400
    assert any("refused" in r.getMessage() for r in caplog.records)
    assert "secret clinical text" not in caplog.text
    assert courier["hospital"].nothing_more(wait=0.3)


def test_tampered_reply_is_refused_and_the_webhook_keeps_working(courier, store, sandbox, caplog):
    public = load_private_key(courier["key_file"]).public_key()
    ciphertext = bytearray(base64.b64decode(rsa_encrypt_chunked(public, reply_json())))
    ciphertext[10] ^= 0xFF
    with caplog.at_level(logging.WARNING):
        assert post_reply(courier["url"], base64.b64encode(bytes(ciphertext)).decode()).status_code == 400
        assert post_reply(courier["url"], "not base64 !").status_code == 400
        swapped = rsa_encrypt_chunked(public, reply_json("m1"))
        assert post_reply(courier["url"], swapped, message_id="other").status_code == 400
    assert "secret clinical text" not in caplog.text
    sent = send_and_remember(store, sandbox, courier["channel"])
    assert on_reactor(sandbox.reply, sent["message_id"], "still fine")["status"] == 200
    assert courier["hospital"].next().get("OBX-5") == "still fine"


def test_webhook_with_basic_auth_refuses_wrong_credentials_with_401(courier):
    assert post_reply(courier["basic_url"], "x").status_code == 401
    assert post_reply(courier["basic_url"], "x", auth=("qliq", "wrong")).status_code == 401
    assert post_reply(courier["basic_url"], "x", auth=("qliq", "hook-secret")).status_code == 400


def test_without_the_secret_path_token_there_is_no_webhook(courier):
    assert post_reply(courier["url"].replace(TOKEN, "guess"), "x").status_code == 404


def test_poll_files_replies_the_webhook_missed_once(courier, store, sandbox):
    sandbox.reply_url = "http://127.0.0.1:9/down"
    sent = send_and_remember(store, sandbox, courier["channel"])
    on_reactor(sandbox.reply, sent["message_id"], "SMS reply: yes")
    poller = ReplyPoller(courier["inbox"], every_s=3600)
    assert on_reactor(poller.poll) == 1
    message = courier["hospital"].next()
    assert message.get("OBX-5") == "SMS reply: yes" and message.get("TXA-13") == "DOC0042"
    assert on_reactor(poller.poll) == 0
    assert courier["hospital"].nothing_more()
    assert on_reactor(store.kv_get, "qliq-poll", "since") is not None


@pytest.mark.parametrize("part", ["attachment", "file", "message"])
def test_a_reply_in_one_file_part_of_any_name_is_filed(courier, part):
    """The document says "the reply as an attachment" and names no part."""
    public = load_private_key(courier["key_file"]).public_key()
    ciphertext = rsa_encrypt_chunked(public, reply_json("m-" + part)).encode()
    answer = requests.post(
        courier["url"],
        timeout=5,
        data={"conversation_id": "c1", "message_id": "m-" + part},
        files={part: ("reply.enc", ciphertext, "application/octet-stream")},
    )
    assert answer.status_code == 200
    assert courier["hospital"].next().get("OBX-5") == "secret clinical text"


def test_a_reply_as_a_form_field_is_filed(courier):
    public = load_private_key(courier["key_file"]).public_key()
    fields = {
        "conversation_id": "c1",
        "message_id": "m1",
        "message": rsa_encrypt_chunked(public, reply_json()),
    }
    assert requests.post(courier["url"], timeout=5, data=fields).status_code == 200
    assert courier["hospital"].next().get("OBX-5") == "secret clinical text"


def test_two_file_parts_and_no_message_part_are_refused(courier):
    public = load_private_key(courier["key_file"]).public_key()
    ciphertext = rsa_encrypt_chunked(public, reply_json()).encode()
    answer = requests.post(
        courier["url"],
        timeout=5,
        data={"conversation_id": "c1", "message_id": "m1"},
        files={"attachment": ("a.enc", ciphertext), "file": ("b.enc", ciphertext)},
    )
    assert answer.status_code == 400
    assert courier["hospital"].nothing_more(wait=0.3)


def test_a_reply_part_above_the_body_limit_is_refused_before_it_is_read(courier):
    too_big = b"A" * (1024 * 1024)  # the route's limit is the default 64 KiB
    answer = requests.post(courier["url"], timeout=5, files={"attachment": ("reply.enc", too_big)})
    assert answer.status_code == 413


def test_mark_opened_is_the_documents_multipart_put_with_the_sender():
    """The document's ``curl -X PUT -F ...``: multipart/form-data, every parameter mandatory."""
    recorder = ScriptedServer()
    try:
        settings = QliqReplySettings(channel="c", base_url=recorder.base_url, api_key="k", sender=US)
        with requests.Session() as session:
            QliqReplyApi(session, settings).mark_opened(Reply("conv-1", "reply-1", "text"))
        [request] = recorder.received
        assert (request.method, request.path) == ("PUT", "/secure_messages/update_message_status")
        content_type = request.headers["Content-Type"]
        assert content_type.startswith("multipart/form-data; boundary=")
        form = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + request.body)
        fields = {
            part.get_param("name", header="content-disposition"): part.get_payload() for part in form.walk()
        }
        fields.pop(None)  # the multipart container
        assert fields == {
            "api_key": "k",
            "sender": US,
            "conversation_id": "conv-1",
            "message_id": "reply-1",
            "status": "opened",
        }
    finally:
        recorder.close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_an_api_call_answered_with_a_redirect_fails_and_is_not_sent_again(status):
    """The api_key is in the request: a redirect must not carry it to another place."""
    recorder = ScriptedServer()
    try:
        recorder.replies.append(ScriptedReply(status, "", {"Location": f"{recorder.base_url}/elsewhere"}))
        settings = QliqReplySettings(channel="c", base_url=recorder.base_url, api_key="k", sender=US)
        with requests.Session() as session, pytest.raises(QliqApiError, match=f"HTTP {status}"):
            QliqReplyApi(session, settings).mark_opened(Reply("conv-1", "reply-1", "text"))
        assert [r.path for r in recorder.received] == ["/secure_messages/update_message_status"]
    finally:
        recorder.close()


def test_an_attachment_over_the_limit_is_left_out_and_the_text_still_reaches_the_hospital(
    courier, store, sandbox
):
    api = courier["inbox"].api
    settings = api.settings
    api.settings = replace(settings, max_attachment_bytes=len(PDF) * 10)
    try:
        sent = send_and_remember(store, sandbox, courier["channel"])
        attachment = Part("attachment", "scan.pdf", "application/pdf", PDF * 11)
        entry = on_reactor(sandbox.reply, sent["message_id"], "See the scan", attachment=attachment)
    finally:
        api.settings = settings
    assert entry["status"] == 200
    message = courier["hospital"].next()
    assert message.get("OBX-5").startswith("See the scan")
    assert "Attachment scan.pdf" in message.get("OBX-5") and "not forwarded" in message.get("OBX-5")
    assert message.segment("OBX", 2) is None, "no ED segment for the attachment left out"


class ChunkedAttachment(BaseHTTPRequestHandler):
    """Answers with a body in chunks and no Content-Length, as a CDN may: only counting the
    bytes as they come can stop it. With ``cut``, the connection drops inside the first chunk."""

    protocol_version = "HTTP/1.1"
    sent = 0
    cut = False

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"x" * (64 * 1024)
        try:
            if ChunkedAttachment.cut:
                self.wfile.write(b"%x\r\n%s" % (len(chunk), chunk[:10]))
                self.close_connection = True
                return
            for _ in range(1024):  # 64 MiB, far past the limit below
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                ChunkedAttachment.sent += len(chunk)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client stopped reading and closed

    def log_message(self, format: str, *args) -> None:
        pass


def test_an_attachment_is_not_downloaded_past_the_limit_whatever_it_declares():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChunkedAttachment)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/attachment?secret-link"
    settings = QliqReplySettings("c", "http://127.0.0.1:9", "k", max_attachment_bytes=256 * 1024)
    ChunkedAttachment.sent, ChunkedAttachment.cut = 0, False
    try:
        with requests.Session() as session:
            api = QliqReplyApi(session, settings)
            with pytest.raises(AttachmentTooLarge):  # its size says 100 bytes; it sends megabytes
                api.attachment({"url": url, "key": "", "size": 100, "fileName": "x.pdf"})
            with pytest.raises(AttachmentTooLarge):  # declared too large: not even asked for
                api.attachment({"url": "http://127.0.0.1:9/never", "key": "", "size": 10**9})
            ChunkedAttachment.cut = True
            with pytest.raises(QliqApiError) as cut:  # a broken download names no URL
                api.attachment({"url": url, "key": "", "fileName": "x.pdf"})
            assert "secret-link" not in str(cut.value) and "127.0.0.1" not in str(cut.value)
    finally:
        server.shutdown()
        server.server_close()
    assert ChunkedAttachment.sent < 16 * 1024 * 1024, "the download stopped near the limit, not at 64 MiB"
