"""Qliq Cloud Messaging API sandbox (seed: qliq-cloud-messaging-api.txt).

Routes (``api_key`` in the query, form, multipart or JSON body, as the document allows):
``POST /secure_messages/send``, ``GET /secure_messages/message_status``,
``PUT /secure_messages/set_sender_pubkey``, ``PUT /secure_messages/update_message_status``,
``GET /secure_messages/get_replies`` and ``GET /files/<id>`` (encrypted reply attachments).
Control extra: ``POST /_sandbox/reply`` makes a recipient reply (see :meth:`QliqSandbox.reply`);
without a ``message_id``, to the last message sent.

The sandbox directory (:class:`QliqDirectory`) holds the members and groups:
``courier@sandbox.qliq`` (Pending: may upload a key), ``poc@sandbox.qliq`` (Inactive, the
group's Point of Contact, used when ``from`` is absent), ``nurse@``/``doctor@sandbox.qliq``
(Active) and ``oncall@sandbox.qliq`` (Accepted); groups ``469841783`` (nurse, doctor, oncall)
and ``827790129`` (doctor), the QliqIDs of the document's examples.

Decisions where the document is silent or contradicts itself:

- ``to``: an e-mail is one recipient; a known group QliqID is a broadcast to its members;
  any other 7-15 digit number is a mobile number and needs ``no_phi=true`` (SMS, Annex A)
  or ``send_non_qliq_user=true`` (Annex B), else 400. A ``from`` that is not a member is 403
  ("not allowed to send"); an unknown ``conversation_id`` is 404.
- Text longer than 150 characters is refused (400) only in the query string, where the
  document's limit comes from; form, multipart and JSON bodies take any length.
- JSON attachment keys are read as written (``"content type"``, ``"file name"``) and in
  snake case (``content_type``, ``file_name``); multipart accepts the part named
  ``attachment`` (the curl example) or ``file`` (the captured request), including the
  captured ``Content-Encoding: base64``. Allowed: PDF, Word, Excel, PNG, JPEG.
- Successful sends answer 202 with lower-case keys
  ``{"status": "Message queued for delivery", "conversation_id", "message_id"}`` (the
  main example; the annexes' capitalised keys are treated as typos).
- ``update_message_status`` takes its parameters only as multipart/form-data, the form of
  the document's only example (``curl -X PUT -F ...``); ``sender`` is mandatory ("M").
- Errors (not documented) are ``{"error": <reason>}``; ``update_message_status`` answers
  ``OK`` as documented and ``set_sender_pubkey`` does the same.
- Types: JSON gives the parameters types; ``to``, ``text``, ``from``, ``subject``,
  ``priority``, ``conversation_id`` and ``reply_posting_url`` are text (a JSON ``null`` is
  read as absent), else 400 ("passed arguments are matching format").
- Formats: ``from`` and ``sender`` are "the email address of the member", so a value that is
  not an e-mail is 400 (a well-formed address of no member stays 403, "not allowed", as the
  document says for an unknown user); ``get_replies``' ``from`` is "Mobile Number of the
  Patient/Recipient", so anything else is 400.
- Mobile numbers are not kept: only the last four digits (``XXXXXX0979``), as documented.
- Duplicates (Qliq has no client message id) are sends with identical content; they are
  counted under the message_id of the first.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
    load_pem_public_key,
)
from twisted.internet.defer import Deferred

from courier_sandbox.base import ControlError, Route, VendorSandbox
from courier_sandbox.checks import is_email
from courier_sandbox.credentials import Credentials, matches
from courier_sandbox.http import (
    ParsedRequest,
    Part,
    Reply,
    decode_base64,
    encode_multipart,
    json_reply,
    text_reply,
)
from courier_sandbox.qliq_crypto import aes_encrypt_file, rsa_encrypt_chunked

ATTACHMENT_TYPES = {
    "application/pdf": ".pdf",
    "application/msword": ".doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "image/png": ".png",
    "image/jpeg": ".jpg",
}
EXTENSION_TYPES = {ext: mime for mime, ext in ATTACHMENT_TYPES.items()} | {".jpeg": "image/jpeg"}
ATTACHMENT_PARTS = frozenset({"attachment", "file"})  # curl example; captured request
PRIORITIES = frozenset({"fyi", "asap", "urgent"})
MAX_QUERY_TEXT = 150
MAX_EXPIRY_MINUTES = 7 * 24 * 60
MOBILE = re.compile(r"\+?\d{7,15}")
KEY_STATES_ALLOWED = frozenset({"Inactive", "Pending"})
TEXT_FIELDS = ("to", "text", "from", "subject", "priority", "conversation_id", "reply_posting_url")


@dataclass
class QliqDirectory:
    members: dict[str, str] = field(
        default_factory=lambda: {
            "courier@sandbox.qliq": "Pending",
            "poc@sandbox.qliq": "Inactive",
            "nurse@sandbox.qliq": "Active",
            "doctor@sandbox.qliq": "Active",
            "oncall@sandbox.qliq": "Accepted",
        }
    )
    groups: dict[str, list[str]] = field(
        default_factory=lambda: {
            "469841783": ["nurse@sandbox.qliq", "doctor@sandbox.qliq", "oncall@sandbox.qliq"],
            "827790129": ["doctor@sandbox.qliq"],
        }
    )
    point_of_contact: str = "poc@sandbox.qliq"


@dataclass
class QliqTimings:
    delivered_after_s: float | None = 2.0
    read_after_s: float | None = 5.0
    recipient_stagger_s: float = 1.0  # each further group member a little later


class QliqSandbox(VendorSandbox):
    name = "qliq"

    def __init__(
        self,
        reactor: Any,
        *,
        credentials: Credentials,
        timings: QliqTimings | None = None,
        directory: QliqDirectory | None = None,
        reply_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(reactor, **kwargs)
        self.credentials = credentials
        self.timings = timings or QliqTimings()
        self.directory = directory or QliqDirectory()
        self.reply_url = reply_url
        self.public_keys: dict[str, RSAPublicKey] = {}
        self.replies: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}

    def routes(self) -> list[Route]:
        return [
            Route("POST", r"/secure_messages/send", self.send),
            Route("GET", r"/secure_messages/message_status", self.message_status),
            Route("PUT", r"/secure_messages/set_sender_pubkey", self.set_sender_pubkey),
            Route("PUT", r"/secure_messages/update_message_status", self.update_message_status),
            Route("GET", r"/secure_messages/get_replies", self.get_replies),
            Route("GET", r"/files/(?P<file_id>[0-9a-f]+)", self.download),
        ]

    def control_routes(self) -> list[Route]:
        return [Route("POST", r"/_sandbox/reply", self._control_reply)]

    def configure(self, settings: dict[str, Any]) -> None:
        for name, value in settings.items():
            if name == "reply_url":
                self.reply_url = value
            elif hasattr(self.timings, name):
                setattr(self.timings, name, value)
            else:
                raise ValueError(f"unknown qliq setting {name!r}")

    def reset_vendor(self) -> None:
        self.public_keys.clear()
        self.replies.clear()
        self.files.clear()

    def vendor_snapshot(self) -> dict[str, Any]:
        return {
            "public_keys": {
                sender: key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
                for sender, key in self.public_keys.items()
            },
            "replies": self.replies,
            "files": {file_id: base64.b64encode(data).decode() for file_id, data in self.files.items()},
        }

    def restore_vendor(self, saved: dict[str, Any]) -> None:
        for sender, pem in saved["public_keys"].items():
            self.public_keys[sender] = load_pem_public_key(pem.encode())
        self.replies.update(saved["replies"])
        self.files.update({file_id: base64.b64decode(data) for file_id, data in saved["files"].items()})

    def resume(self, message_id: str) -> None:
        self._schedule_recipients(message_id)

    def _authenticate(self, request: ParsedRequest) -> tuple[dict[str, Any], Reply | None]:
        """All parameters, and a 401 when their ``api_key`` is not the sandbox's."""
        params = _params(request)
        if not matches(params.get("api_key"), self.credentials.qliq_api_key):
            return params, self.error_reply(401, "invalid API key")
        return params, None

    # -- sending -----------------------------------------------------------------------
    def send(self, request: ParsedRequest) -> Reply:
        params, refused = self._authenticate(request)
        if refused:
            return refused
        problem = _type_problem(params)
        if problem:
            return self.error_reply(400, problem)
        text, to = params.get("text"), params.get("to")
        if not text:
            return self.error_reply(400, "text is required")
        if "text" in request.query and len(text) > MAX_QUERY_TEXT:
            return self.error_reply(400, "use a JSON payload for text over 150 characters")
        if not to:
            return self.error_reply(400, "to is required")
        problem = _send_problem(params)
        if problem:
            return self.error_reply(400, problem)
        if params.get("from") and not is_email(params["from"]):
            return self.error_reply(400, "from must be the e-mail address of a member")
        sender = params.get("from") or self.directory.point_of_contact
        if sender not in self.directory.members:
            return self.error_reply(403, "not allowed to send message from this user")
        kind, recipients = self._recipients(to.strip(), params)
        if kind is None:
            return self.error_reply(400, recipients[0])
        conversation_id = params.get("conversation_id")
        if conversation_id and not any(
            m["conversation_id"] == conversation_id for m in self.state.messages.values()
        ):
            return self.error_reply(404, "unknown conversation_id")
        attachment, problem = _attachment(request, params)
        if problem:
            return self.error_reply(400, problem)
        return self._accept(params, sender, kind, recipients, attachment)

    def _recipients(self, to: str, params: dict[str, Any]) -> tuple[str | None, list[str]]:
        if is_email(to):
            return "qliq", [to]
        if to in self.directory.groups:
            return "group", list(self.directory.groups[to])
        if not MOBILE.fullmatch(to):
            return None, ["to must be an e-mail, a group QliqID or a mobile number"]
        masked = "X" * 6 + to[-4:]
        if _flag(params.get("no_phi")):
            return "sms", [masked]
        if _flag(params.get("send_non_qliq_user")):
            return "non_qliq", [masked]
        return None, ["a mobile number needs no_phi=true or send_non_qliq_user=true"]

    def _accept(
        self, params: dict[str, Any], sender: str, kind: str, recipients: list[str], attachment: Part | None
    ) -> Reply:
        content = {k: params.get(k) for k in ("to", "from", "subject", "text", "priority", "conversation_id")}
        content["attachment"] = hashlib.sha256(attachment.data).hexdigest() if attachment else None
        message_id = uuid.uuid4().hex
        conversation_id = params.get("conversation_id") or uuid.uuid4().hex
        self.state.count_if_duplicate(content, message_id)
        expiry = int(params.get("expiry_in_minutes") or 1440) if kind == "non_qliq" else None
        about_attachment = attachment and {
            "file_name": attachment.filename,
            "size": len(attachment.data),
            "content_type": attachment.content_type,
        }
        self.state.messages[message_id] = {
            "message_id": message_id,
            "conversation_id": conversation_id,
            "kind": kind,
            "sender": sender,
            "subject": params.get("subject"),
            "reply_posting_url": params.get("reply_posting_url"),
            "expiry_in_minutes": expiry,
            "attachment": about_attachment,
            "recipients": [{"to": to} for to in recipients],
        }
        self._schedule_recipients(message_id)
        return json_reply(
            202,
            {
                "status": "Message queued for delivery",
                "conversation_id": conversation_id,
                "message_id": message_id,
            },
        )

    def _schedule_recipients(self, message_id: str) -> None:
        """Each recipient's delivered and read times still ahead, from now."""
        t = self.timings
        for i, recipient in enumerate(self.state.messages[message_id]["recipients"]):
            stagger = i * t.recipient_stagger_s
            if t.delivered_after_s is not None and "delivered_at" not in recipient:
                self.schedule(t.delivered_after_s + stagger, self._mark, message_id, i, "delivered_at")
            if t.read_after_s is not None and "read_at" not in recipient:
                self.schedule(t.read_after_s + stagger, self._mark, message_id, i, "read_at")

    def _mark(self, message_id: str, index: int, what: str) -> None:
        recipient = self.state.messages[message_id]["recipients"][index]
        if what == "read_at":
            recipient.setdefault("delivered_at", int(self.now()))
        recipient.setdefault(what, int(self.now()))

    def force_status(self, message_id: str, change: dict[str, Any]) -> dict[str, Any]:
        """``{"status": "delivered" | "read"}`` for every recipient of the message."""
        record = self.state.messages.get(message_id)
        if record is None:
            raise ControlError(404, "unknown message")
        what = {"delivered": "delivered_at", "read": "read_at"}.get(change.get("status"))
        if what is None:
            raise ControlError(400, "status must be 'delivered' or 'read'")
        for i in range(len(record["recipients"])):
            self._mark(message_id, i, what)
        return record

    def message_status(self, request: ParsedRequest) -> Reply:
        params, refused = self._authenticate(request)
        if refused:
            return refused
        message_id = params.get("message_id")
        if not message_id:
            return self.error_reply(400, "message_id is required")
        self.state.status_polls[message_id] += 1
        record = self.state.messages.get(message_id)
        if record is None:
            return self.error_reply(404, "unknown message_id")
        return json_reply(200, [dict(r) for r in record["recipients"] if "delivered_at" in r])

    # -- replies -----------------------------------------------------------------------
    def set_sender_pubkey(self, request: ParsedRequest) -> Reply:
        params, refused = self._authenticate(request)
        if refused:
            return refused
        sender = params.get("sender")
        if not sender:
            return self.error_reply(400, "sender is required")
        if not is_email(sender):
            return self.error_reply(400, "sender must be an e-mail address")
        key = _public_key(request)
        if key is None:
            return self.error_reply(400, "attach an RSA 2048-bit public key (PEM or DER)")
        state = self.directory.members.get(sender)
        if state not in KEY_STATES_ALLOWED:
            return self.error_reply(403, "key can only be set for an Inactive or Pending user")
        self.public_keys[sender] = key
        return text_reply(200, "OK")

    def reply(
        self, message_id: str, text: str, *, attachment: Part | None = None, ack_requested: bool = False
    ) -> Deferred[dict[str, Any]]:
        """A recipient replies: encrypt for the sender and POST to the reply webhook."""
        original = self.state.messages.get(message_id)
        if original is None:
            raise ControlError(404, "unknown message")
        key = self.public_keys.get(original["sender"])
        if key is None:
            raise ControlError(409, f"no public key uploaded for {original['sender']}")
        url = original["reply_posting_url"] or self.reply_url
        if not url:
            raise ControlError(409, "no reply URL configured")
        reply_id = uuid.uuid4().hex
        created = datetime.datetime.fromtimestamp(self.now(), datetime.UTC).isoformat()
        data = {
            "conversationUuid": original["conversation_id"],
            "convesationSubject": original["subject"],  # sic: the documented spelling
            "messageId": reply_id,
            "text": text,
            "createdAt": created,
            "attachments": [self._encrypted_attachment(attachment)] if attachment else [],
        }
        if ack_requested:
            data["ackRequired"] = True  # the doc names no field for "Request Acknowledgement"
        clear = json.dumps(
            {"Message": {"Command": "extended-im", "Subject": "text", "Type": "u2u", "Data": data}}
        ).encode()
        self.replies[reply_id] = {
            "conversation_id": original["conversation_id"],
            "message_id": reply_id,
            "sender_info": original["recipients"][0]["to"],
            "reply": text,
            "received_at": created,
            "recipient": original["sender"],
            "ack_requested": ack_requested,
            "status": "delivered",
        }
        body, content_type = encode_multipart(
            {"conversation_id": original["conversation_id"], "message_id": reply_id},
            [Part("message", "message", "text/plain", rsa_encrypt_chunked(key, clear).encode())],
            boundary=uuid.uuid4().hex,
        )
        d = self.deliver_webhook("reply", url, body, {"Content-Type": content_type})
        return d.addCallback(
            lambda entry: {**entry, "message_id": reply_id, "conversation_id": original["conversation_id"]}
        )

    def _encrypted_attachment(self, attachment: Part) -> dict[str, Any]:
        encrypted, key = aes_encrypt_file(attachment.data)
        file_id = uuid.uuid4().hex
        self.files[file_id] = encrypted
        return {
            "encryptionMethod": 1,
            "fileName": attachment.filename,
            "key": key,
            "mime": attachment.content_type,
            "size": len(attachment.data),
            "url": f"{self.base_url}/files/{file_id}",
        }

    def _control_reply(self, request: ParsedRequest) -> Deferred[Reply]:
        body = request.json if isinstance(request.json, dict) else {}
        attachment = None
        if isinstance(body.get("attachment"), dict):
            a = body["attachment"]
            data = decode_base64(a.get("base64", ""))
            if data is None:
                raise ControlError(400, "attachment.base64 must be Base64")
            attachment = Part(
                "attachment",
                a.get("file_name", "reply.bin"),
                a.get("content_type", "application/octet-stream"),
                data,
            )
        latest = next(reversed(self.state.messages), None)  # the demo's "reply to the last one"
        d = self.reply(
            str(body.get("message_id") or latest),
            str(body.get("text", "Received, thanks")),
            attachment=attachment,
            ack_requested=bool(body.get("ack_requested")),
        )
        return d.addCallback(lambda entry: json_reply(200, entry))

    def download(self, request: ParsedRequest, file_id: str) -> Reply:
        data = self.files.get(file_id)
        if data is None:
            return self.error_reply(404, "no such file")
        return Reply(200, data, {"Content-Type": "application/octet-stream"})

    def update_message_status(self, request: ParsedRequest) -> Reply:
        params, refused = self._authenticate(request)
        if refused:
            return refused
        if request.content_type != "multipart/form-data":
            return self.error_reply(400, "send the parameters as multipart/form-data, as the curl -F example")
        missing = [k for k in ("sender", "conversation_id", "message_id", "status") if not params.get(k)]
        if missing:
            return self.error_reply(400, f"missing {', '.join(missing)}")
        if not is_email(params["sender"]):
            return self.error_reply(400, "sender must be an e-mail address")
        reply = self.replies.get(params["message_id"])
        if reply is None or reply["conversation_id"] != params["conversation_id"]:
            return self.error_reply(404, "unknown reply")
        if reply["recipient"] != params["sender"]:
            return self.error_reply(403, "sender is not the recipient of this reply")
        if params["status"] not in ("opened", "acked"):
            return self.error_reply(400, "status must be 'opened' or 'acked'")
        if params["status"] == "acked" and not reply["ack_requested"]:
            return self.error_reply(400, "this reply did not request acknowledgement")
        reply["status"] = "read" if params["status"] == "opened" else "acked"
        return text_reply(200, "OK")

    def get_replies(self, request: ParsedRequest) -> Reply:
        params, refused = self._authenticate(request)
        if refused:
            return refused
        if params.get("from") and not MOBILE.fullmatch(str(params["from"])):
            return self.error_reply(400, "from must be a mobile number")
        since = params.get("since")
        since_at = _parse_since(since) if since else None
        if since and since_at is None:
            return self.error_reply(400, "since must be a UTC date or date-time")
        found = []
        for reply in self.replies.values():
            if params.get("from") and not reply["sender_info"].endswith(params["from"][-4:]):
                continue
            if since_at and datetime.datetime.fromisoformat(reply["received_at"]) <= since_at:
                continue
            found.append(
                {
                    k: reply[k]
                    for k in ("conversation_id", "message_id", "sender_info", "reply", "received_at")
                }
            )
        return json_reply(200, found)


def _params(request: ParsedRequest) -> dict[str, Any]:
    """Query, form and JSON parameters together (Qliq accepts ``api_key`` in any of them)."""
    merged: dict[str, Any] = dict(request.query)
    merged.update(request.form)
    if isinstance(request.json, dict):
        merged.update(request.json)
    return merged


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _type_problem(params: dict[str, Any]) -> str | None:
    """A text parameter sent (in JSON) as another type; ``null`` counts as absent."""
    for name in TEXT_FIELDS:
        if params.get(name) is not None and not isinstance(params[name], str):
            return f"{name} must be text"
    return None


def _send_problem(params: dict[str, Any]) -> str | None:
    priority = params.get("priority")
    if priority is not None and priority not in PRIORITIES:
        return "priority must be fyi, asap or urgent"
    for name in ("no_phi", "send_non_qliq_user"):
        if name in params and not _flag(params[name]):
            return f"{name} must be true"
    if _flag(params.get("no_phi")) and _flag(params.get("send_non_qliq_user")):
        return "no_phi and send_non_qliq_user cannot be combined"
    expiry = params.get("expiry_in_minutes")
    if expiry is not None:
        try:
            minutes = int(expiry)
        except (TypeError, ValueError):
            return "expiry_in_minutes must be a whole number"
        if isinstance(expiry, bool) or not 1 <= minutes <= MAX_EXPIRY_MINUTES:
            return "expiry_in_minutes must be between 1 and 10080 (7 days)"
    url = params.get("reply_posting_url")
    if url is not None and not re.match(r"https?://\S+$", str(url)):
        return "reply_posting_url must be an http(s) URL"
    return None


def _attachment(request: ParsedRequest, params: dict[str, Any]) -> tuple[Part | None, str | None]:
    """The one attachment of a send (JSON object or multipart part) and any problem with it."""
    if any(p.name not in ATTACHMENT_PARTS for p in request.files):
        return None, "unknown file part; send the attachment as 'attachment'"
    parts = list(request.files)
    if isinstance(params.get("attachment"), dict):
        a = params["attachment"]
        data = decode_base64(str(a.get("base64", "")))
        if data is None:
            return None, "attachment.base64 must be Base64"
        parts.append(
            Part(
                "attachment",
                a.get("file_name") or a.get("file name"),
                a.get("content_type") or a.get("content type") or "",
                data,
            )
        )
    if len(parts) > 1:
        return None, "only one attachment per request"
    if not parts:
        return None, None
    part = parts[0]
    content_type = part.content_type
    if content_type in ("", "application/octet-stream") and part.filename:
        suffix = "." + part.filename.rsplit(".", 1)[-1].lower() if "." in part.filename else ""
        content_type = EXTENSION_TYPES.get(suffix, content_type)
    if content_type not in ATTACHMENT_TYPES:
        return None, "attachment must be PDF, Word, Excel, PNG or JPG"
    if not part.data:
        return None, "attachment is empty"
    return Part(part.name, part.filename, content_type, part.data), None


def _public_key(request: ParsedRequest) -> RSAPublicKey | None:
    data = request.files[0].data if request.files else request.raw
    for load in (load_pem_public_key, load_der_public_key):
        try:
            key = load(data)
        except (ValueError, TypeError):
            continue
        if isinstance(key, RSAPublicKey) and key.key_size == 2048:
            return key
    return None


def _parse_since(value: str) -> datetime.datetime | None:
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = datetime.datetime.strptime(value, "%Y-%m-%d")
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
