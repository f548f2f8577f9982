"""Qliq replies back to the hospital: the encrypted reply webhook and the get_replies poll.

**Webhook.** Qliq POSTs ``multipart/form-data`` to the "Reply API URL": fields
``conversation_id`` and ``message_id``, and a part ``message`` holding Base64 ciphertext
(the official C# sample); the document says only "the reply as an attachment", so a reply
in one file part of any name is taken too (:func:`posted_ciphertext`). We Base64-decode
it, split it into 256-byte blocks, decrypt each with our RSA-2048 private key (PKCS#1 v1.5)
and parse the joined JSON. Its one attachment is downloaded from ``url`` and decrypted
with its AES-256 ``key`` in the sandbox's layout (CBC, PKCS#7 padding, 16-byte IV in front
of the file; see ``courier_sandbox.qliq_crypto``).
The document shows no authentication for this webhook, and the encryption proves nothing
(anyone can encrypt with our public key), so it must be served on a path with a secret token
in it (``qliq/<channel>/<destination>/<token>/replies``, see ``engine.status.routes``) and/or
behind Basic auth, if Qliq's dashboard URL can carry user:password; one of them is required.
A reply that does not decrypt, or whose outer ``message_id`` differs from the encrypted one,
is refused with 400 and one log line without content.

**Poll.** SMS replies (and webhook replies when the webhook is down) are fetched with
``GET /secure_messages/get_replies?since=...``; the cursor is kept in the store.

**Into HL7.** A reply becomes an MDM^T02 (``engine.status.documents``): the reply text as
OBX TX, the attachment as OBX ED. It answers the hospital message whose delivery opened the
conversation: the delivery queue calls
:func:`~engine.delivery.conversations.remember_conversation` when Qliq accepts a
message, and the reply then reuses that message's PID, PV1, addressing and delimiters and
names its MSH-10 in TXA-13 and ZIN-5. A reply in an unknown conversation goes to the
configured channel without patient. Each reply is filed once (its id is kept in the store);
if Courier stops between filing and remembering, a repeat POST can file it twice.

Once the HL7 is durably queued, the reply is marked ``opened`` with ``update_message_status``
(Qliq marks it "delivered" itself when the POST is answered).
"""

from __future__ import annotations

import base64
import binascii
import email
import json
import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.web.resource import Resource
from twisted.web.server import Request

from engine.delivery.conversations import openers_namespace
from engine.destinations.rules import parse_vendor_time
from engine.leases import take_turn
from engine.logs import loggable_error
from engine.message import Message
from engine.status.documents import Attachment, InboundDocument, Origin, build_document_message, log_queued
from engine.status.reporter import StatusReporter
from engine.status.webhooks import answer_when_done
from engine.store import Store

log = logging.getLogger(__name__)

FILED = "qliq-replies"  # kv: reply message id → b"filed"
POLL_CURSOR = ("qliq-poll", "since")
_AES_BLOCK = 16
MAX_ATTACHMENT_BYTES = 16 * 1024 * 1024
"""What one reply attachment may weigh, encrypted: the download stops beyond it. Base64 in
the document makes it a third larger, and the hospital's engine has a frame limit too."""
_CHUNK = 64 * 1024


class RefusedReply(ValueError):
    """A reply we cannot read: wrong key, tampered, or not Qliq's layout. Says nothing of content."""


class QliqApiError(Exception):
    """A Qliq call failed; the message never holds the URL or the API key."""


class AttachmentTooLarge(Exception):
    """An attachment over :attr:`QliqReplySettings.max_attachment_bytes`: not downloaded
    further, and left out of the document (whose text says so)."""

    def __init__(self, meta: dict[str, Any], size: int | None, limit: int) -> None:
        super().__init__(f"a Qliq attachment over {limit} bytes was left out")
        self.meta, self.size, self.limit = meta, size, limit

    def note(self) -> str:
        """For the document's text, which goes to the hospital (the file name may be PHI)."""
        name = str(self.meta.get("fileName") or "without a name")
        size = "" if self.size is None else f", {self.size} bytes"
        return f"[Attachment {name}{size} not forwarded: larger than {self.limit} bytes.]"


@dataclass(frozen=True)
class QliqReplySettings:
    channel: str  # where replies in unknown conversations go
    base_url: str
    api_key: str = field(repr=False)
    sender: str = ""  # our Qliq member, whose public key Qliq encrypts with
    timeout_s: float = 30.0
    verify: str | bool = True  # CA file for a sandbox over HTTPS
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES


@dataclass(frozen=True)
class Reply:
    """One reply, decrypted; attachments still encrypted at Qliq (``url``, ``key``, ...)."""

    conversation_id: str
    message_id: str
    text: str = field(repr=False)
    created_at: float | None = None
    attachments: tuple[dict[str, Any], ...] = field(default=(), repr=False)


def decrypt_reply(private_key: RSAPrivateKey, ciphertext_b64: bytes) -> Reply:
    """The ``message`` part as a :class:`Reply`; raises :class:`RefusedReply`."""
    try:
        ciphertext = base64.b64decode(ciphertext_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise RefusedReply("the message part is not Base64") from None
    block = private_key.key_size // 8
    if not ciphertext or len(ciphertext) % block:
        raise RefusedReply(f"the ciphertext is not whole {block}-byte blocks")
    try:
        clear = b"".join(
            private_key.decrypt(ciphertext[i : i + block], asymmetric_padding.PKCS1v15())
            for i in range(0, len(ciphertext), block)
        )
        data = json.loads(clear)["Message"]["Data"]
        return Reply(
            conversation_id=str(data["conversationUuid"]),
            message_id=str(data["messageId"]),
            text=str(data.get("text") or ""),
            created_at=_epoch(data.get("createdAt")),
            attachments=tuple(a for a in data.get("attachments") or () if isinstance(a, dict)),
        )
    except (ValueError, KeyError, TypeError):  # a wrong key yields garbage or a padding error
        raise RefusedReply("the message does not decrypt to a Qliq reply (wrong key or tampered)") from None


def decrypt_attachment(encrypted: bytes, key_b64: str) -> bytes:
    """AES-256-CBC with the IV in front and PKCS#7 padding; raises :class:`RefusedReply`."""
    try:
        key = base64.b64decode(key_b64, validate=True)
        iv, body = encrypted[:_AES_BLOCK], encrypted[_AES_BLOCK:]
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(body) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except (ValueError, binascii.Error):
        raise RefusedReply("the attachment does not decrypt with its key") from None


def _whole_number(value: Any) -> int | None:
    """A size as the reply or a header gives it, or None when it is not a whole number."""
    try:
        return int(str(value))
    except ValueError:
        return None


def _epoch(text: Any) -> float | None:
    stamp = parse_vendor_time(text)
    return None if stamp is None else stamp.timestamp()


class QliqReplyApi:
    """The blocking Qliq calls replies need; run them in a worker thread."""

    def __init__(self, session: requests.Session, settings: QliqReplySettings) -> None:
        self.session = session
        self.settings = settings

    def _call(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:
        """One request; errors name the call and the HTTP status, never the URL (it holds the key)."""
        api = "://" not in path_or_url  # an API call carries the api_key; an attachment URL does not
        url = self.settings.base_url.rstrip("/") + path_or_url if api else path_or_url
        what = f"Qliq {method} {path_or_url.split('?')[0] if api else 'attachment'}"
        try:
            response = self.session.request(
                method,
                url,
                timeout=self.settings.timeout_s,
                verify=self.settings.verify,
                allow_redirects=not api,  # a redirect would send the api_key again, elsewhere
                **kwargs,
            )
        except requests.RequestException as exc:
            raise QliqApiError(f"{what}: {type(exc).__name__}") from None
        if response.status_code >= 400 or (api and response.is_redirect):
            response.close()  # a streamed answer's connection goes back to the pool
            raise QliqApiError(f"{what}: HTTP {response.status_code}")
        return response

    def attachment(self, meta: dict[str, Any]) -> Attachment:
        """Download and decrypt one attachment; :class:`AttachmentTooLarge` past the limit,
        whatever its declared ``size`` or Content-Length say (both are checked first)."""
        limit = self.settings.max_attachment_bytes
        declared = _whole_number(meta.get("size"))
        if declared is not None and declared > limit:
            raise AttachmentTooLarge(meta, declared, limit)
        with self._call("GET", str(meta["url"]), stream=True) as response:
            length = _whole_number(response.headers.get("Content-Length"))
            if length is not None and length > limit:
                raise AttachmentTooLarge(meta, length, limit)
            chunks, size = [], 0
            try:
                for chunk in response.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise AttachmentTooLarge(meta, None, limit)
                    chunks.append(chunk)
            except requests.RequestException as exc:  # its text holds the URL, a secret link
                raise QliqApiError(f"Qliq GET attachment: {type(exc).__name__}") from None
        data = decrypt_attachment(b"".join(chunks), str(meta["key"]))
        media_type = str(meta.get("mime") or "application/octet-stream")
        return Attachment(media_type, data, str(meta.get("fileName", "")))

    def mark_opened(self, reply: Reply) -> None:
        """``update_message_status`` as multipart/form-data, like the document's ``curl -F``."""
        fields = {
            "api_key": self.settings.api_key,
            "sender": self.settings.sender,
            "conversation_id": reply.conversation_id,
            "message_id": reply.message_id,
            "status": "opened",
        }
        self._call(
            "PUT",
            "/secure_messages/update_message_status",
            files={name: (None, value) for name, value in fields.items()},
        )

    def replies_since(self, since: str | None) -> list[Reply]:
        params = {"api_key": self.settings.api_key, **({"since": since} if since else {})}
        found = self._call("GET", "/secure_messages/get_replies", params=params).json()
        return [
            Reply(
                str(r["conversation_id"]),
                str(r["message_id"]),
                str(r.get("reply") or ""),
                _epoch(r.get("received_at")),
            )
            for r in found
            if isinstance(r, dict)
        ]


class ReplyInbox:
    """Files each reply once, as HL7 in the outbox of the conversation's channel."""

    def __init__(
        self,
        store: Store,
        reporter: StatusReporter,
        reactor: IReactorTime,
        api: QliqReplyApi,
        name: str,
    ) -> None:
        self.store = store
        self.reporter = reporter
        self.reactor = reactor
        self.api = api
        self.name = name  # qliq/<channel>/<destination>: its webhook and poll routes start so
        self._filing: dict[str, DeferredLock] = {}  # reply id → its filing, while one runs

    def in_thread(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    def file(self, reply: Reply, origin: Origin) -> Deferred[bool]:
        """Queue the reply for the hospital (fires True), or fire False if it was filed before.

        The webhook and the poller (which looks back a few minutes) can bring the same reply
        at once; the second waits for the first filing, then finds it filed.
        """
        lock = self._filing.setdefault(reply.message_id, DeferredLock())

        def done(result: Any) -> Any:
            if not lock.locked and not lock.waiting:
                del self._filing[reply.message_id]
            return result

        return lock.run(self._file, reply, origin).addBoth(done)

    @inlineCallbacks
    def _file(self, reply: Reply, origin: Origin) -> Generator[Deferred, Any, bool]:
        if (yield self.store.kv_get(FILED, reply.message_id)) is not None:
            return False
        channel, answers = yield self._conversation(reply.conversation_id)
        attachments, left_out = [], []
        for meta in reply.attachments:
            try:
                attachments.append((yield self.in_thread(self.api.attachment, meta)))
            except AttachmentTooLarge as exc:  # the clinician's text still reaches the hospital
                log.warning("Qliq reply %s: %s", reply.message_id, exc)
                left_out.append(exc.note())
        now = self.reactor.seconds()
        document = InboundDocument(
            vendor="qliq",
            vendor_message_id=reply.message_id,
            received_at=reply.created_at or now,
            origin=origin,
            text="\n\n".join([reply.text, *left_out]) if left_out else reply.text,
            attachments=tuple(attachments),
            conversation_id=reply.conversation_id,
            answers_control_id=answers.control_id if answers else "",
        )
        control_id = self.reporter.control_ids()
        at = datetime.fromtimestamp(now, UTC)
        # Base64 of the attachments: off the reactor, as MedAllies inbound does
        payload = yield self.in_thread(
            partial(build_document_message, document, control_id=control_id, now=at, answers=answers)
        )
        yield self.reporter.enqueue(channel, payload, control_id)
        yield self.store.kv_put(FILED, reply.message_id, b"filed")
        log_queued(document, control_id)
        self.in_thread(self.api.mark_opened, reply).addErrback(
            lambda f: log.warning(
                "Qliq reply %s: could not mark it opened: %s", reply.message_id, f.getErrorMessage()
            )
        )
        return True

    @inlineCallbacks
    def _conversation(self, conversation_id: str):
        """(channel, the hospital message that opened the conversation or None)."""
        link = yield self.store.kv_get(openers_namespace("qliq"), conversation_id)
        if link is None:
            return self.api.settings.channel, None
        known = json.loads(link)
        stored = yield self.store.get_message(known["message_id"], with_body=True)
        if stored is None:
            return known["channel"], None
        answers = yield self.in_thread(partial(Message.parse, stored.raw, default_charset="latin-1"))
        return known["channel"], answers


class ReplyWebhook(Resource):
    """The Reply API URL: decrypt, file, then answer 200 (Qliq then marks it delivered)."""

    isLeaf = True

    def __init__(self, inbox: ReplyInbox, private_key: RSAPrivateKey) -> None:
        super().__init__()
        self.inbox = inbox
        self.private_key = private_key

    def render_POST(self, request: Request) -> object:
        origin = Origin(request.route.name, request.peer_host())
        fields = request.args or {}
        outer_id = (fields.get(b"message_id") or [b""])[0].decode("utf-8", "replace")
        content_type = (request.requestHeaders.getRawHeaders(b"Content-Type") or [b""])[0]
        # The server bounded the body (the route's max_body_bytes) before it was read.
        d = self.inbox.in_thread(_read_posted, self.private_key, fields, content_type, request.content.read())
        d.addCallback(_same_reply, outer_id)
        d.addCallback(self.inbox.file, origin)
        return answer_when_done(request, d, f"webhook {origin.route}", refused=(RefusedReply,))


def posted_ciphertext(fields: Mapping[bytes, list[bytes]], content_type: bytes, body: bytes) -> bytes:
    """The reply's ciphertext: the ``message`` part of Qliq's C# sample (a form field or a
    file), else the one file part whatever its name. The document says only "the reply as an
    attachment"; its own examples name attachments ``attachment`` and ``file``.
    Raises :class:`RefusedReply` when there is no such part, or several."""
    if fields.get(b"message"):
        return fields[b"message"][0]
    files = _file_parts(content_type, body)
    if len(files) != 1:
        raise RefusedReply(f"expected a 'message' field or one file part, got {len(files)} file parts")
    return files[0]


def _file_parts(content_type: bytes, body: bytes) -> list[bytes]:
    """The contents of the parts of a multipart/form-data body that carry a file name."""
    if not content_type.lower().startswith(b"multipart/form-data"):
        return []
    head = b"MIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n\r\n"
    form = email.message_from_bytes(head + body)
    if not form.is_multipart():
        return []
    return [part.get_payload(decode=True) or b"" for part in form.walk() if part.get_filename() is not None]


def _read_posted(
    private_key: RSAPrivateKey, fields: Mapping[bytes, list[bytes]], content_type: bytes, body: bytes
) -> Reply:
    """The posted reply, parsed and decrypted (RSA, block by block): on a thread, not the reactor."""
    return decrypt_reply(private_key, posted_ciphertext(fields, content_type, body))


def _same_reply(reply: Reply, outer_id: str) -> Reply:
    """The form fields are not encrypted: they must name the reply the ciphertext holds."""
    if outer_id and outer_id != reply.message_id:
        raise RefusedReply("the form's message_id is not the encrypted reply's")
    return reply


class ReplyPoller:
    """The fallback: every ``every_s``, fetch replies since the last poll and file new ones.

    The cursor goes back ``overlap_s`` so a reply Qliq stamps late is not missed; replies
    already filed (by the webhook or an earlier poll) are skipped.
    """

    def __init__(self, inbox: ReplyInbox, *, every_s: float = 300.0, overlap_s: float = 300.0) -> None:
        self.inbox = inbox
        self.every_s = every_s
        self.overlap_s = overlap_s
        self._loop = LoopingCall(self._my_turn)
        self._loop.clock = inbox.reactor

    def start(self) -> None:
        self._loop.start(self.every_s, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    @inlineCallbacks
    def _my_turn(self) -> Generator[Deferred, Any, None]:
        """A scheduled poll, unless another node sharing the store has this period's turn."""
        try:
            job = f"qliq-replies:{self.inbox.name}"
            mine = yield take_turn(self.inbox.store, self.inbox.reactor, job, self.every_s)
        except Exception as exc:
            log.warning("Qliq get_replies poll skipped: the store did not answer: %s", loggable_error(exc))
            return
        if mine:
            yield self.poll()

    @inlineCallbacks
    def poll(self) -> Generator[Deferred, Any, int]:
        """One poll; fires with the number of replies filed. Failures are logged, never raised."""
        store = self.inbox.store
        filed = 0
        try:
            since = yield store.kv_get(*POLL_CURSOR)
            started = self.inbox.reactor.seconds() - self.overlap_s
            api = self.inbox.api
            replies = yield self.inbox.in_thread(api.replies_since, since.decode() if since else None)
            origin = Origin(f"{self.inbox.name}/get_replies", urlsplit(api.settings.base_url).hostname or "?")
            for reply in replies:
                filed += bool((yield self.inbox.file(reply, origin)))
            cursor = datetime.fromtimestamp(started, UTC).isoformat()
            yield store.kv_put(*POLL_CURSOR, cursor.encode())
        except Exception as exc:  # the next poll tries again
            log.warning("Qliq get_replies poll failed: %s", loggable_error(exc))
        return filed
