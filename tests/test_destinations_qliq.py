"""Qliq: pre-flight rules, JSON requests, attachments as follow-ups, conversation threading."""

from __future__ import annotations

import pytest
import requests

from engine.destinations import Outcome
from engine.destinations.qliq.destination import QliqDestination
from engine.destinations.qliq.keys import upload_public_key
from tests import test_destinations_http as loopback
from tests.test_destinations_http import Reply, make_settings

server, session = loopback.server, loopback.session  # the loopback fixtures

PDF = {"content_type": "application/pdf", "file_name": "summary.pdf", "base64": "JVBERi0="}
PNG = {"content_type": "image/png", "file_name": "wound.png", "base64": "iVBORw0KGgo="}


def destination(base_url="http://127.0.0.1:9", session=None):
    settings = make_settings(QliqDestination, {"base_url": base_url, "api_key": "qliq-key"})
    return QliqDestination(settings, session)


def problems_of(**payload):
    payload = {"to": "oncall@example.org", "text": "Discharge summary ready", **payload}
    return [(p.key, p.code) for p in destination().validate(payload)]


def test_a_member_message_has_no_problems():
    assert problems_of(subject="Discharge", priority="urgent", attachments=[PDF]) == []


@pytest.mark.parametrize("key", ["to", "text"])
def test_required_fields(key):
    assert problems_of(**{key: ""}) == [(key, 101)]


@pytest.mark.parametrize(
    ("to", "ok"), [("oncall@example.org", True), ("469841783", True), ("on call", False), ("oncall@", False)]
)
def test_to_is_a_member_email_or_a_qliq_id(to, ok):
    assert (problems_of(to=to) == []) is ok


@pytest.mark.parametrize(
    ("priority", "ok"), [("fyi", True), ("asap", True), ("urgent", True), ("routine", False)]
)
def test_priority_table(priority, ok):
    assert (problems_of(priority=priority) == []) is ok


def test_from_must_be_an_email():
    assert problems_of(**{"from": "notifier@example.org"}) == []
    assert problems_of(**{"from": "notifier"}) == [("from", 102)]


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/pdf", True),
        ("application/msword", True),
        ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", True),
        ("image/png", True),
        ("image/jpeg", True),
        ("text/plain", False),
        ("image/gif", False),
    ],
)
def test_attachment_types(content_type, ok):
    assert (problems_of(attachments=[{**PDF, "content_type": content_type}]) == []) is ok


def test_attachment_must_be_base64():
    assert problems_of(attachments=[{**PDF, "base64": "%%%"}]) == [("attachments[0].base64", 102)]


def sms(**changes):
    return {"to": "4693110979", "text": "Please call the clinic", "no_phi": True, **changes}


def test_sms_to_a_mobile_number_with_no_phi():
    assert problems_of(**sms()) == []
    assert problems_of(**sms(to="+447700900123", reply_posting_url="https://h.example/r")) == []


def test_sms_needs_a_mobile_number():
    assert problems_of(**sms(to="oncall@example.org")) == [("to", 102)]


def test_sms_may_not_carry_phi():
    assert problems_of(**sms(no_phi=False)) == [("no_phi", 103)]
    assert problems_of(**sms(attachments=[PDF])) == [("attachments", 102)]


def test_reply_posting_url_only_for_sms():
    assert problems_of(reply_posting_url="https://h.example/r") == [("reply_posting_url", 102)]


def non_qliq(**changes):
    return {"to": "4693110979", "text": "A referral is waiting", "send_non_qliq_user": True, **changes}


@pytest.mark.parametrize(
    ("minutes", "ok"), [(60, True), ("1440", True), (10080, True), (10081, False), (0, False)]
)
def test_non_qliq_link_expiry_is_at_most_seven_days(minutes, ok):
    assert (problems_of(**non_qliq(expiry_in_minutes=minutes)) == []) is ok


def test_non_qliq_flag_must_be_true():
    assert problems_of(**non_qliq(send_non_qliq_user="false")) == [("send_non_qliq_user", 103)]


def test_expiry_only_for_non_qliq_users():
    assert problems_of(expiry_in_minutes=60) == [("expiry_in_minutes", 102)]


def test_sms_and_non_qliq_exclude_each_other():
    assert ("send_non_qliq_user", 102) in problems_of(**sms(send_non_qliq_user=True))


# -- sending -----------------------------------------------------------------------------


def test_a_long_text_goes_as_json_with_the_api_key(server, session):
    server.reply(
        Reply(202, {"status": "Message queued for delivery", "conversation_id": "c-1", "message_id": "m-1"})
    )
    text = "x" * 400
    result = destination(server.base_url, session).send(
        {"to": "oncall@example.org", "text": text, "priority": "asap"}, idempotency_key="k"
    )
    request = server.received[0]
    assert (request.method, request.path) == ("POST", "/secure_messages/send")
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "api_key": "qliq-key",
        "to": "oncall@example.org",
        "text": text,
        "priority": "asap",
    }
    assert (result.outcome, result.remote_id, result.conversation_id) == (Outcome.ACCEPTED, "m-1", "c-1")


def test_capitalised_response_keys_are_read(server, session):
    server.reply(Reply(202, {"status": "Queued for Delivery", "Conversation_id": "c-2", "Message_id": "m-2"}))
    result = destination(server.base_url, session).send(sms(), idempotency_key="k")
    assert (result.remote_id, result.conversation_id) == ("m-2", "c-2")
    assert server.received[0].json()["no_phi"] is True


def test_a_known_conversation_is_continued(server, session):
    server.reply(Reply(202, {"conversation_id": "c-9", "message_id": "m-1"}))
    destination(server.base_url, session).send(
        {"to": "oncall@example.org", "text": "update"}, idempotency_key="k", conversation_id="c-9"
    )
    assert server.received[0].json()["conversation_id"] == "c-9"


def test_each_further_attachment_is_a_follow_up_in_the_same_conversation(server, session):
    server.reply(
        Reply(202, {"conversation_id": "c-1", "message_id": "m-1"}),
        Reply(202, {"conversation_id": "c-1", "message_id": "m-2"}),
    )
    payload = {
        "to": "oncall@example.org",
        "subject": "Discharge",
        "text": "Summary",
        "attachments": [PDF, PNG],
    }
    result = destination(server.base_url, session).send(payload, idempotency_key="k")

    first, second = (r.json() for r in server.received)
    assert first["attachment"] == PDF and "conversation_id" not in first
    assert first["text"] == "Summary"
    assert second["attachment"] == PNG
    assert second["conversation_id"] == "c-1"
    assert second["text"] == "Attachment 2 of 2"
    assert result.outcome is Outcome.ACCEPTED
    assert dict(result.vendor_ids) == {"message_id": "m-1", "message_id_2": "m-2"}


def test_a_failed_follow_up_keeps_the_conversation_for_the_retry(server, session):
    server.reply(Reply(202, {"conversation_id": "c-1", "message_id": "m-1"}), Reply(500, {}))
    payload = {"to": "oncall@example.org", "text": "Summary", "attachments": [PDF, PNG]}
    result = destination(server.base_url, session).send(payload, idempotency_key="k")
    assert result.outcome is Outcome.RETRY
    assert result.conversation_id == "c-1"
    assert result.reason.startswith("request 2 of 2: HTTP 500")


def test_each_follow_up_waits_for_the_rate_limits_and_a_stop_keeps_the_progress(server, session):
    server.reply(*[Reply(202, {"conversation_id": "c-1", "message_id": f"m-{n}"}) for n in (1, 2, 3, 4)])
    payload = {"to": "oncall@example.org", "text": "Summary", "attachments": [PDF, PNG, PDF]}
    qliq = destination(server.base_url, session)
    paced: list[int] = []  # how many requests the server had when a further one was paced
    qliq.pace = lambda: paced.append(len(server.received)) or True
    assert qliq.send(payload, idempotency_key="k").outcome is Outcome.ACCEPTED
    assert paced == [1, 2]  # the queue paced the first
    qliq.pace = lambda: False  # the queue is stopping
    stopped = qliq.send(payload, idempotency_key="k2")
    assert len(server.received) == 4
    assert stopped.outcome is Outcome.RETRY and stopped.progress is not None


def test_check_status_per_recipient(server, session):
    server.reply(
        Reply(
            200,
            [
                {"to": "a@example.org", "delivered_at": 1700000000, "read_at": 1700000100},
                {"to": "b@example.org", "delivered_at": 1700000050},
                {"to": "c@example.org"},
            ],
        )
    )
    updates = destination(server.base_url, session).check_status("m-1")
    assert [(u.recipient, u.state) for u in updates] == [
        ("a@example.org", "read"),
        ("b@example.org", "delivered"),
        ("c@example.org", "pending"),
    ]
    assert updates[0].at.timestamp() == 1700000100
    assert server.received[0].path == "/secure_messages/message_status?api_key=qliq-key&message_id=m-1"


def test_check_status_empty_means_pending(server, session):
    server.reply(Reply(200, []))
    [update] = destination(server.base_url, session).check_status("m-1")
    assert update.state == "pending"


def test_a_retry_given_the_progress_of_a_failed_follow_up_starts_at_that_follow_up(server, session):
    """The care team must not get the message twice: only the missing attachment goes again."""
    server.reply(
        Reply(202, {"conversation_id": "c-1", "message_id": "m-1"}),
        Reply(500, {}),
        Reply(202, {"conversation_id": "c-1", "message_id": "m-2"}),
    )
    payload = {"to": "oncall@example.org", "text": "Summary", "attachments": [PDF, PNG]}
    qliq = destination(server.base_url, session)
    failed = qliq.send(payload, idempotency_key="k")
    assert failed.outcome is Outcome.RETRY and failed.progress is not None
    assert "Summary" not in failed.progress, "ids only: the store keeps it in clear"

    result = qliq.send(payload, idempotency_key="k", resume=failed.progress)

    assert len(server.received) == 3, "the message itself was not sent again"
    resent = server.received[2].json()
    assert resent["attachment"] == PNG and resent["conversation_id"] == "c-1"
    assert result.outcome is Outcome.ACCEPTED and result.remote_id == "m-1"
    assert dict(result.vendor_ids) == {"message_id": "m-1", "message_id_2": "m-2"}
    assert result.progress is None
    qliq.send(payload, idempotency_key="k")  # without progress (a requeue) it starts over
    assert server.received[3].json()["attachment"] == PDF


def test_a_failure_of_the_message_itself_has_no_progress(server, session):
    server.reply(Reply(500, {}))
    payload = {"to": "oncall@example.org", "text": "Summary", "attachments": [PDF, PNG]}
    assert destination(server.base_url, session).send(payload, idempotency_key="k").progress is None


def test_the_key_upload_never_puts_again_on_a_redirect(server, session):
    server.reply(Reply(307, "", {"Location": "/elsewhere"}))
    with pytest.raises(requests.HTTPError, match="HTTP 307"):
        upload_public_key(session, server.base_url, "key", "lab@example.org", b"-----BEGIN PUBLIC KEY-----")
    assert [r.path.split("?")[0] for r in server.received] == ["/secure_messages/set_sender_pubkey"]
