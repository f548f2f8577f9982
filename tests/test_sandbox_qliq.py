"""The Qliq sandbox over real sockets: sends in every encoding, statuses, keys, encrypted replies."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from courier_sandbox.qliq import QliqSandbox, QliqTimings
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS, Receiver, fake_clock, fresh, serve

KEY = TEST_CREDENTIALS.qliq_api_key
CAPTURED = "H4sICI0fXVQAA3BhZ2UucGRmAAvOz01VCE7MLchJVQhITE8FAAyOwbUQAAAA"  # from the doc
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nsandbox").decode()


@pytest.fixture(scope="module")
def clock():
    return fake_clock()


@pytest.fixture(scope="module")
def started(reactor, clock):
    sandbox = QliqSandbox(
        reactor,
        credentials=TEST_CREDENTIALS,
        clock=clock,
        timings=QliqTimings(delivered_after_s=2, read_after_s=5, recipient_stagger_s=1),
    )
    yield from serve(sandbox)


@pytest.fixture
def sandbox(started):
    fresh(started)
    started.reply_url = None
    return started


@pytest.fixture(scope="module")
def private_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def url(sandbox, path):
    return f"{sandbox.base_url}/secure_messages/{path}"


def send_json(sandbox, **fields):
    body = {
        "api_key": KEY,
        "to": "nurse@sandbox.qliq",
        "from": "courier@sandbox.qliq",
        "subject": "Result",
        "text": "Result is available",
        **fields,
    }
    return requests.post(url(sandbox, "send"), json=body, timeout=5)


def test_json_send_is_queued(sandbox):
    r = send_json(sandbox)
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "Message queued for delivery"
    assert body["conversation_id"] and body["message_id"]
    assert sandbox.state.messages[body["message_id"]]["recipients"] == [{"to": "nurse@sandbox.qliq"}]


def test_query_and_form_sends(sandbox):
    query = {"api_key": KEY, "to": "nurse@sandbox.qliq", "text": "Hello again"}
    assert requests.post(url(sandbox, "send"), params=query, timeout=5).status_code == 202
    assert requests.post(url(sandbox, "send"), data=query, timeout=5).status_code == 202
    long_text = {**query, "text": "x" * 151}
    assert requests.post(url(sandbox, "send"), params=long_text, timeout=5).status_code == 400
    assert requests.post(url(sandbox, "send"), data=long_text, timeout=5).status_code == 202


def test_multipart_send_with_attachment(sandbox):
    data = {
        "api_key": KEY,
        "to": "827790129",
        "from": "courier@sandbox.qliq",
        "subject": "1111",
        "text": "Hello again",
    }
    files = {"attachment": ("GNYHA.pdf", b"%PDF-1.4", "application/pdf")}
    r = requests.post(url(sandbox, "send"), data=data, files=files, timeout=5)
    assert r.status_code == 202
    record = sandbox.state.messages[r.json()["message_id"]]
    assert record["attachment"] == {"file_name": "GNYHA.pdf", "content_type": "application/pdf", "size": 8}


def test_captured_file_part_with_base64_content_encoding(sandbox):
    boundary = "38516d25820c4a9aad05f1e42cb442f4"
    fields = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in {"api_key": KEY, "to": "827790129", "text": "Hi"}.items()
    )
    body = (
        fields + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="GNYHA.pdf"\r\nContent-Type: application/pdf\r\n'
        "Content-Encoding: base64\r\n\r\n"
        f"{CAPTURED}\r\n"
        f"--{boundary}--\r\n"
    )
    r = requests.post(
        url(sandbox, "send"),
        data=body.encode(),
        timeout=5,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 202
    assert sandbox.state.messages[r.json()["message_id"]]["attachment"]["size"] == len(
        base64.b64decode(CAPTURED)
    )


def test_json_attachment_with_documented_key_spellings(sandbox):
    documented = {"content type": "image/png", "file name": "qliq-qr.png", "base64": PNG}
    assert send_json(sandbox, attachment=documented).status_code == 202
    snake = {"content_type": "image/png", "file_name": "qliq-qr.png", "base64": PNG}
    assert send_json(sandbox, attachment=snake).status_code == 202


@pytest.mark.parametrize(
    "fields, code",
    [
        ({"api_key": "wrong"}, 401),
        ({"api_key": None}, 401),
        ({"text": ""}, 400),
        ({"to": ""}, 400),
        ({"to": "not a recipient"}, 400),
        ({"priority": "whenever"}, 400),
        ({"from": "stranger@elsewhere.org"}, 403),
        ({"conversation_id": "0" * 32}, 404),
        ({"attachment": {"content_type": "text/html", "file_name": "a.html", "base64": PNG}}, 400),
        ({"attachment": {"content_type": "image/png", "file_name": "a.png", "base64": "@@"}}, 400),
        ({"to": "4693110979"}, 400),
        ({"to": "4693110979", "no_phi": False}, 400),
        ({"to": "4693110979", "send_non_qliq_user": True, "expiry_in_minutes": 10081}, 400),
        ({"to": "4693110979", "send_non_qliq_user": True, "expiry_in_minutes": 0}, 400),
        ({"to": "4693110979", "no_phi": True, "reply_posting_url": "ftp://x"}, 400),
    ],
)
def test_send_errors(sandbox, fields, code):
    r = send_json(sandbox, **fields)
    assert r.status_code == code
    assert "error" in r.json()
    assert sandbox.state.messages == {}


def test_two_attachments_are_refused(sandbox):
    files = [
        ("attachment", ("a.pdf", b"%PDF", "application/pdf")),
        ("file", ("b.pdf", b"%PDF", "application/pdf")),
    ]
    r = requests.post(
        url(sandbox, "send"), data={"api_key": KEY, "to": "827790129", "text": "x"}, files=files, timeout=5
    )
    assert r.status_code == 400


def test_unknown_path_is_404_and_wrong_method_405(sandbox):
    assert requests.post(url(sandbox, "nothing"), timeout=5).status_code == 404
    r = requests.get(url(sandbox, "send"), timeout=5)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


def test_sms_and_non_qliq_annexes_keep_only_last_four_digits(sandbox):
    sms = send_json(sandbox, to="4693110979", no_phi=True, reply_posting_url="http://127.0.0.1:9/replies")
    assert sms.status_code == 202
    record = sandbox.state.messages[sms.json()["message_id"]]
    assert record["kind"] == "sms" and record["recipients"] == [{"to": "XXXXXX0979"}]
    link = send_json(sandbox, to="4693110979", send_non_qliq_user=True, expiry_in_minutes=10080)
    assert link.status_code == 202
    assert sandbox.state.messages[link.json()["message_id"]]["expiry_in_minutes"] == 10080
    assert "4693110979" not in json.dumps(sandbox.state.messages)


def status(sandbox, message_id, api_key=KEY):
    return requests.get(
        url(sandbox, "message_status"), params={"api_key": api_key, "message_id": message_id}, timeout=5
    )


def test_group_status_moves_per_recipient(sandbox, clock):
    message_id = send_json(sandbox, to="469841783").json()["message_id"]
    assert status(sandbox, message_id).json() == []
    on_reactor(clock.advance, 2)
    first = status(sandbox, message_id).json()
    assert [r["to"] for r in first] == ["nurse@sandbox.qliq"] and "read_at" not in first[0]
    on_reactor(clock.advance, 2)
    assert len(status(sandbox, message_id).json()) == 3
    on_reactor(clock.advance, 1)
    now = status(sandbox, message_id).json()
    assert "read_at" in now[0] and "read_at" not in now[1]
    assert now[0]["read_at"] >= now[0]["delivered_at"]
    assert sandbox.state.status_polls[message_id] == 4


def test_status_errors_and_forced_read(sandbox):
    message_id = send_json(sandbox).json()["message_id"]
    assert status(sandbox, message_id, api_key="bad").status_code == 401
    assert status(sandbox, "f" * 32).status_code == 404
    assert requests.get(url(sandbox, "message_status"), params={"api_key": KEY}, timeout=5).status_code == 400
    forced = requests.post(
        f"{sandbox.base_url}/_sandbox/status/{message_id}", json={"status": "read"}, timeout=5
    )
    assert forced.status_code == 200
    assert set(status(sandbox, message_id).json()[0]) == {"to", "delivered_at", "read_at"}


def test_identical_sends_count_as_duplicates(sandbox):
    first = send_json(sandbox).json()["message_id"]
    send_json(sandbox)
    send_json(sandbox, text="different")
    assert dict(sandbox.state.duplicates) == {first: 1}


def upload_key(sandbox, private_key, sender="courier@sandbox.qliq"):
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return requests.put(
        url(sandbox, "set_sender_pubkey"),
        params={"sender": sender},
        data={"api_key": KEY},
        files={"file": ("public.pem", pem)},
        timeout=5,
    )


def test_set_sender_pubkey_rules(sandbox, private_key):
    assert upload_key(sandbox, private_key).status_code == 200
    assert upload_key(sandbox, private_key, "poc@sandbox.qliq").status_code == 200
    assert upload_key(sandbox, private_key, "nurse@sandbox.qliq").status_code == 403
    assert upload_key(sandbox, private_key, "oncall@sandbox.qliq").status_code == 403
    assert upload_key(sandbox, private_key, "nobody@sandbox.qliq").status_code == 403
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert upload_key(sandbox, small).status_code == 400
    r = requests.put(
        url(sandbox, "set_sender_pubkey"),
        params={"sender": "courier@sandbox.qliq"},
        data={"api_key": "bad"},
        files={"file": ("p.pem", b"x")},
        timeout=5,
    )
    assert r.status_code == 401


def decrypt_reply(private_key, ciphertext_b64: bytes) -> dict:
    raw = base64.b64decode(ciphertext_b64)
    assert len(raw) % 256 == 0
    clear = b"".join(
        private_key.decrypt(raw[i : i + 256], rsa_padding.PKCS1v15()) for i in range(0, len(raw), 256)
    )
    return json.loads(clear)


def parse_form(headers, body) -> dict[str, bytes]:
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body
    )
    return {
        p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
        for p in message.iter_parts()
    }


def test_encrypted_reply_webhook_decrypts_with_private_key(sandbox, private_key):
    receiver = Receiver()
    try:
        sandbox.reply_url = receiver.url + "/secure_message_replies"
        upload_key(sandbox, private_key)
        sent = send_json(sandbox, subject="Potassium").json()
        long_text = "Please call me about this result. " * 20  # several RSA blocks
        attachment = b"%PDF-1.4 reply attachment"
        r = requests.post(
            f"{sandbox.base_url}/_sandbox/reply",
            json={
                "message_id": sent["message_id"],
                "text": long_text,
                "ack_requested": True,
                "attachment": {
                    "file_name": "scan.pdf",
                    "content_type": "application/pdf",
                    "base64": base64.b64encode(attachment).decode(),
                },
            },
            timeout=5,
        )
        assert r.status_code == 200 and r.json()["status"] == 200
        path, headers, body = receiver.next()
        assert path == "/secure_message_replies"
        assert headers["Content-Type"].startswith("multipart/form-data")
        form = parse_form(headers, body)
        assert form["conversation_id"].decode() == sent["conversation_id"]
        reply_id = form["message_id"].decode()
        data = decrypt_reply(private_key, form["message"])["Message"]["Data"]
        assert data["text"] == long_text and data["messageId"] == reply_id
        assert data["conversationUuid"] == sent["conversation_id"]
        assert data["convesationSubject"] == "Potassium"
        [meta] = data["attachments"]
        assert meta["encryptionMethod"] == 1 and meta["size"] == len(attachment)
        encrypted = requests.get(meta["url"], timeout=5).content
        key = base64.b64decode(meta["key"])
        decryptor = Cipher(algorithms.AES(key), modes.CBC(encrypted[:16])).decryptor()
        padded = decryptor.update(encrypted[16:]) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        assert unpadder.update(padded) + unpadder.finalize() == attachment

        update = {
            "api_key": KEY,
            "sender": "courier@sandbox.qliq",
            "conversation_id": sent["conversation_id"],
            "message_id": reply_id,
        }
        as_form = requests.put(
            url(sandbox, "update_message_status"), data={**update, "status": "opened"}, timeout=5
        )
        assert as_form.status_code == 400  # the document's only form is multipart (curl -F)
        for status_value, code in [("seen", 400), ("opened", 200), ("acked", 200)]:
            r = requests.put(
                url(sandbox, "update_message_status"),
                files=parts({**update, "status": status_value}),
                timeout=5,
            )
            assert r.status_code == code
        assert r.text == "OK"
        without_sender = {k: v for k, v in update.items() if k != "sender"}
        r = requests.put(
            url(sandbox, "update_message_status"),
            files=parts({**without_sender, "status": "opened"}),
            timeout=5,
        )
        assert r.status_code == 400 and "sender" in r.text
        assert (
            requests.put(
                url(sandbox, "update_message_status"),
                files=parts({**update, "status": "opened", "sender": "nurse@sandbox.qliq"}),
                timeout=5,
            ).status_code
            == 403
        )
        assert (
            requests.put(
                url(sandbox, "update_message_status"),
                files=parts({**update, "message_id": "0" * 32, "status": "opened"}),
                timeout=5,
            ).status_code
            == 404
        )
    finally:
        receiver.close()


def parts(fields: dict[str, str]) -> dict[str, tuple[None, str]]:
    """Plain fields sent as multipart/form-data, as ``curl -F`` does."""
    return {name: (None, value) for name, value in fields.items()}


def test_reply_needs_key_and_url(sandbox, private_key):
    sent = send_json(sandbox).json()
    reply = {"message_id": sent["message_id"], "text": "ok"}
    assert requests.post(f"{sandbox.base_url}/_sandbox/reply", json=reply, timeout=5).status_code == 409
    upload_key(sandbox, private_key)
    assert requests.post(f"{sandbox.base_url}/_sandbox/reply", json=reply, timeout=5).status_code == 409


def test_get_replies_filters_by_mobile_and_since(sandbox, private_key):
    receiver = Receiver()
    try:
        upload_key(sandbox, private_key)
        sms = send_json(sandbox, to="4693110979", no_phi=True, reply_posting_url=receiver.url + "/sms").json()
        requests.post(
            f"{sandbox.base_url}/_sandbox/reply",
            json={"message_id": sms["message_id"], "text": "Taken it"},
            timeout=5,
        )
        assert receiver.next()[0] == "/sms"
        params = {"api_key": KEY}
        [reply] = requests.get(url(sandbox, "get_replies"), params=params, timeout=5).json()
        assert reply["reply"] == "Taken it" and reply["sender_info"] == "XXXXXX0979"
        assert set(reply) == {"conversation_id", "message_id", "sender_info", "reply", "received_at"}
        other = requests.get(
            url(sandbox, "get_replies"), params={**params, "from": "5551234567"}, timeout=5
        ).json()
        assert other == []
        later = requests.get(url(sandbox, "get_replies"), params={**params, "since": "2999-1-1"}, timeout=5)
        assert later.json() == []
        earlier = requests.get(
            url(sandbox, "get_replies"), params={**params, "since": "2018-1-17"}, timeout=5
        )
        assert [r["message_id"] for r in earlier.json()] == [reply["message_id"]]
        assert (
            requests.get(
                url(sandbox, "get_replies"), params={**params, "since": "yesterday"}, timeout=5
            ).status_code
            == 400
        )
    finally:
        receiver.close()


def test_multipart_type_from_extension_and_unknown_parts(sandbox):
    data = {"api_key": KEY, "to": "827790129", "text": "x"}
    typed = {"attachment": ("scan.JPG", b"\xff\xd8\xff", "application/octet-stream")}
    r = requests.post(url(sandbox, "send"), data=data, files=typed, timeout=5)
    assert r.status_code == 202
    assert sandbox.state.messages[r.json()["message_id"]]["attachment"]["content_type"] == ("image/jpeg")
    stray = {"document": ("a.pdf", b"%PDF", "application/pdf")}
    assert requests.post(url(sandbox, "send"), data=data, files=stray, timeout=5).status_code == 400
    unknown = {"attachment": ("a.exe", b"MZ", "application/octet-stream")}
    assert requests.post(url(sandbox, "send"), data=data, files=unknown, timeout=5).status_code == 400


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"subject": 5}, 400),
        ({"text": ["Result"]}, 400),
        ({"to": 469841783}, 400),
        ({"from": ["courier@sandbox.qliq"]}, 400),
        ({"priority": ["urgent"]}, 400),
        ({"conversation_id": 7}, 400),
        ({"from": "courier"}, 400),
        ({"to": "469841783", "priority": "urgent", "conversation_id": None}, 202),
    ],
)
def test_send_parameters_have_the_documented_types_and_formats(sandbox, fields, code):
    """JSON values that are not text, or a ``from`` that is no e-mail, do not match "the
    format in method's documentation" (400); a JSON null is an absent optional field."""
    r = send_json(sandbox, **fields)
    assert r.status_code == code, r.text


def test_sender_is_an_email_address(sandbox, private_key):
    assert upload_key(sandbox, private_key, "courier").status_code == 400
    update = {"api_key": KEY, "sender": "courier", "conversation_id": "c", "message_id": "m"}
    r = requests.put(
        url(sandbox, "update_message_status"), files=parts({**update, "status": "opened"}), timeout=5
    )
    assert r.status_code == 400 and "e-mail" in r.text
    assert upload_key(sandbox, private_key).status_code == 200


def test_get_replies_from_is_a_mobile_number(sandbox):
    params = {"api_key": KEY}
    r = requests.get(url(sandbox, "get_replies"), params={**params, "from": "nurse@sandbox.qliq"}, timeout=5)
    assert r.status_code == 400
    r = requests.get(url(sandbox, "get_replies"), params={**params, "from": "4693110979"}, timeout=5)
    assert r.status_code == 200 and r.json() == []
