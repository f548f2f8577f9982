"""MedAllies webhooks: inbound Direct messages (→ MDM^T02 to the hospital) and DSN statuses.

Both are POSTed by MedAllies with Basic auth and the shared secret we gave them (the
document names it for inbound messages and says nothing for DSNs; the sandbox signs both);
the webhook server checks it before it reads a body (:mod:`engine.status.webhook_server`).

- **Inbound**: the JSON becomes an :class:`InboundDocument` (body text, every
  ``emailAttachmentList`` item as an OBX ED, the patient fields as PID) and is stored in the
  outbox of the channel it is configured for; only then does MedAllies get its 200.
- **DSN**: ``Disposition`` is read loosely (split on ';', last token: processed, dispatched,
  displayed, failed), ``Status: Error`` always means failed, and the result goes to
  :meth:`StatusTracker.apply_update` under the original ``messageId`` (our remote id), in the
  ``urn:uuid:`` form we sent it in even when the DSN names it by its bare uuid.
"""

from __future__ import annotations

import binascii
import json
import logging
from base64 import b64decode
from datetime import UTC, datetime
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.web.resource import Resource
from twisted.web.server import Request

from engine.destinations.base import StatusUpdate
from engine.destinations.medallies.destination import STATUS_STATES, direct_message_id
from engine.destinations.rules import parse_vendor_time
from engine.status.documents import (
    Attachment,
    InboundDocument,
    Origin,
    Patient,
    build_document_message,
    log_queued,
)
from engine.status.reporter import StatusReporter
from engine.status.webhooks import answer, answer_when_done

log = logging.getLogger(__name__)


class StatusTracker(Protocol):
    """The delivery side's entry for pushed statuses (``engine.delivery``)."""

    def apply_update(
        self, ref: int | str, update: StatusUpdate, *, destination: str | None = None
    ) -> Deferred[object] | None: ...


class InvalidInbound(ValueError):
    """The POSTed JSON is not an inbound Direct message we can file."""


def inbound_document(body: Any, received_at: float, origin: Origin) -> InboundDocument:
    """The documented inbound JSON as a document; raises :class:`InvalidInbound`."""
    if not isinstance(body, dict) or not isinstance(body.get("messageId"), str):
        raise InvalidInbound("not a Direct message: no messageId")
    attachments = []
    for n, item in enumerate(body.get("emailAttachmentList") or [], start=1):
        try:
            data = b64decode(item["attachmentContent"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise InvalidInbound(f"attachment {n} has no Base64 attachmentContent") from None
        name = item.get("attachmentFileName") or item.get("attachmentTitle") or ""
        attachments.append(Attachment(item.get("attachmentClass") or "application/octet-stream", data, name))
    text = "\n\n".join(str(body[key]) for key in ("messageSubject", "messageBody") if body.get(key))
    return InboundDocument(
        vendor="medallies",
        vendor_message_id=body["messageId"],
        received_at=received_at,
        origin=origin,
        sender=str(body.get("fromDirectAddress", "")),
        text=text,
        attachments=tuple(attachments),
        conversation_id=str(body.get("replyToMessageId") or ""),
        document_type="CD",
        patient=Patient(
            *(
                str(body.get(key) or "")
                for key in (
                    "patientId",
                    "assigning_authority",
                    "patientLastname",
                    "patientFirstname",
                    "patientMiddlename",
                    "patientDOB",
                    "patientGender",
                )
            )
        ),
    )


def dsn_update(body: Any) -> tuple[str, StatusUpdate]:
    """(original messageId, normalised status) from a DSN; raises ValueError when unreadable."""
    if not isinstance(body, dict) or not isinstance(body.get("Id"), str):
        raise ValueError("not a DSN: no Id")
    disposition = str(body.get("Disposition") or "").split(";")[-1].strip()
    state = STATUS_STATES.get(disposition.upper())
    if str(body.get("Status", "")).lower() == "error" or state is None and "fail" in disposition.lower():
        state = "failed"
    if state is None:
        raise ValueError("DSN disposition not understood")
    detail = f"DSN {disposition}"
    if body.get("Description") and body["Description"] != disposition:
        detail += f": {body['Description']}"
    at = parse_vendor_time(body.get("Timestamp"))
    return direct_message_id(body["Id"]), StatusUpdate(state, at=at, detail=detail)


class InboundResource(Resource):
    """``POST`` an inbound Direct message: 200 once it is in the channel's outbox."""

    isLeaf = True

    def __init__(self, channel: str, reporter: StatusReporter, reactor: IReactorTime) -> None:
        super().__init__()
        self.channel = channel
        self.reporter = reporter
        self.clock = reactor

    def render_POST(self, request: Request) -> object:
        origin = Origin(request.route.name, request.peer_host())
        now = self.clock.seconds()
        control_id = self.reporter.control_ids()
        # Parsing, Base64 checks and the HL7 build take a while for big attachments: a thread.
        built = deferToThreadPool(
            self.clock, self.clock.getThreadPool(), _build, request.content.read(), now, origin, control_id
        )
        stored = built.addCallback(self._enqueue, control_id)
        return answer_when_done(request, stored, f"webhook {origin.route}", refused=(InvalidInbound,))

    def _enqueue(self, document_and_payload: tuple[InboundDocument, bytes], control_id: str) -> Deferred:
        document, payload = document_and_payload
        stored = self.reporter.enqueue(self.channel, payload, control_id)
        return stored.addCallback(lambda _: log_queued(document, control_id))


def _build(body: bytes, now: float, origin: Origin, control_id: str) -> tuple[InboundDocument, bytes]:
    """The inbound document and its MDM^T02; :class:`InvalidInbound` says what is wrong."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInbound("not JSON") from None  # the parser's text could quote the body
    try:
        document = inbound_document(parsed, now, origin)
        payload = build_document_message(
            document, control_id=control_id, now=datetime.fromtimestamp(now, UTC)
        )
    except (TypeError, AttributeError, KeyError) as exc:  # a field of the wrong JSON type
        # 400, not 500: MedAllies would resend a message that can never be read, for ever
        raise InvalidInbound(f"a field has the wrong type ({type(exc).__name__})") from None
    return document, payload


class DSNResource(Resource):
    """``POST`` a delivery status notification: 200 once the tracker has applied it."""

    isLeaf = True

    def __init__(self, tracker: StatusTracker, destination: str | None = None) -> None:
        super().__init__()
        self.tracker = tracker
        self.destination = destination  # the MedAllies destination whose remote ids DSNs name

    def render_POST(self, request: Request) -> object:
        try:
            message_id, update = dsn_update(json.loads(request.content.read()))
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
            reason = exc if type(exc) is ValueError else type(exc).__name__  # ours, or the type
            log.warning("MedAllies DSN: refused: %s", reason)
            return answer(request, 400, b"not a DSN\n")
        applied = maybeDeferred(self.tracker.apply_update, message_id, update, destination=self.destination)
        return answer_when_done(request, applied, f"MedAllies DSN for {message_id}")
