"""KPN Healthcare Messenger: messages into 1:1 conversations and group chats.

Bearer auth with a token from the three-legged OAuth flow (:mod:`engine.destinations.kpn.oauth`),
read from the :class:`~engine.destinations.base.TokenProvider` on every send. Text goes as
JSON ``{"body": ...}`` to ``<chat>/messages``; attachments as ``multipart/form-data`` to
``<chat>/attachments`` (a ``message`` field and one ``files`` part per document): one call
either way. KPN allows 30 calls per second per OAuth client (:func:`account_rate`): every
call is booked in the store against the bucket of its client id, which all destinations and
nodes using that client share; the queue books a send's first call, and the ``GET /me`` or
``Location`` read that may follow it is booked before it goes (``self.pace``). We pace at
90 % of the configured limit because requests spaced exactly 1/30 s apart arrive bunched by
network jitter, and the sandbox's sliding window then answered 429.

An expired token is a 401. It is returned as AUTH_FAILED with the reason
"KPN token expired: run courier kpn authorize": the message is fine, so the queue keeps it
QUEUED without spending an attempt until an operator has authorised again.

Conflicts and gaps, and how they are resolved here:

* KPN's own path list is not public; the sandbox runs on Alterdesk, whose client code puts the
  auxiliary prefix first: ``aux/conversations/{auxId}``, ``aux/groupchats/{auxId}``. We use
  that form. Ids are URL-encoded.
* KPN documents no error body and no delivery/read status API: results carry the HTTP reason
  and ACCEPTED is the last state we can know.
* A 404 can name the chat (from the message) or the endpoint (a wrong ``base_url``), and no
  error body tells them apart. We ask ``GET /me``: when it answers, the chat is missing and
  the message is REJECTED; when it is 404 too, the endpoint is, and the destination is held.
* "302 Found. Link in location header": the POST is never sent again. The ``Location`` is
  read once with a GET (same host only, the token goes with it); a 2xx there is the message
  we posted, anything else fails the delivery with the reason.
* "Versionless API, version tight. If no version is provided in the header it defaults to
  the latest version." The header's name is not printed; we send ``version`` with the
  changelog's only version, ``v1.0`` (setting ``api_version``), so a new release cannot
  change what a running channel sends.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests

from engine.destinations import rules
from engine.destinations.base import Outcome, Problem, SendResult
from engine.destinations.kpn import oauth as kpn_oauth
from engine.destinations.payload import DATA_TYPE, MISSING, check_payload, is_blank
from engine.destinations.plugin import AccountRate
from engine.destinations.transport import HttpDestination, get_ci, http_settings_spec, json_body
from engine.spec import Spec, number, objects, string

TOKEN_EXPIRED = "KPN token expired: run courier kpn authorize"
#: Share of the vendor's rate limit we actually use: headroom for network jitter.
PACING = 0.9

ATTACHMENT_SPEC = Spec(
    "kpn attachment",
    "One file shared in the chat.",
    (
        string("file_name", "File name shown in the chat.", required=True),
        string("mime_type", "MIME type of the file.", required=True, example="application/pdf"),
        string("content", "The file, Base64.", required=True),
    ),
)
PAYLOAD_SPEC = Spec(
    "kpn payload",
    "What a mapping produces for a KPN Healthcare Messenger message.",
    (
        string(
            "chat_type",
            "A 1:1 conversation or a group chat.",
            required=True,
            choices=("conversation", "groupchat"),
        ),
        string("chat_id", "The KPN id of the chat (give this or aux_id)."),
        string("aux_id", "Our own auxiliary id of the chat (give this or chat_id)."),
        string("body", "The message text.", required=True),
        objects("attachments", ATTACHMENT_SPEC),
    ),
)


class KpnDestination(HttpDestination):
    """KPN Healthcare Messenger (Alterdesk API)."""

    kind = "kpn"
    settings_spec = http_settings_spec(
        "kpn",
        "How to reach KPN Healthcare Messenger and authorise Courier with OAuth.",
        string("client_id", "OAuth consumer key.", required=True),
        string("client_secret", "OAuth consumer secret (for courier kpn authorize).", secret=True),
        string(
            "authorize_url",
            "OAuth authorization endpoint.",
            default="https://api-prd.kpn.com/healthcaremessenger_oauth/authorize",
        ),
        string(
            "token_url",
            "OAuth token endpoint.",
            default="https://api-prd.kpn.com/healthcaremessenger_oauth/token",
        ),
        string(
            "redirect_uri", "The callback URL registered with KPN.", default="http://127.0.0.1:8765/callback"
        ),
        string("scope", "Space-delimited OAuth scopes.", default="read write"),
        number("requests_per_second", "KPN's rate limit per client id.", default=30.0, min=0.1),
        string(
            "api_version",
            "API version sent in the version header; without it KPN uses its latest version.",
            default="v1.0",
        ),
    )
    payload_spec = PAYLOAD_SPEC
    auth_failed_reason = TOKEN_EXPIRED

    def validate(self, payload: Mapping[str, Any]) -> list[Problem]:
        problems = check_payload(PAYLOAD_SPEC, payload)
        given = [k for k in ("chat_id", "aux_id") if not is_blank(payload.get(k))]
        if not given:
            problems.append(Problem("chat_id", MISSING, "give chat_id or aux_id"))
        elif len(given) == 2:
            problems.append(Problem("aux_id", DATA_TYPE, "give chat_id or aux_id, not both"))
        for i, attachment in enumerate(payload.get("attachments") or ()):
            content = attachment.get("content") if isinstance(attachment, Mapping) else None
            if isinstance(content, str) and content and not rules.base64_decoded_size(content):
                key = f"attachments[{i}].content"
                problems.append(Problem(key, DATA_TYPE, f"{key} is not valid, non-empty Base64"))
        return problems

    def send(
        self,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str,
        conversation_id: str | None = None,
        resume: str | None = None,
    ) -> SendResult:
        token = self.token_provider.token() if self.token_provider else None
        if not token:
            return SendResult(Outcome.AUTH_FAILED, reason=TOKEN_EXPIRED)
        headers = {"Authorization": f"Bearer {token}", "version": self.settings["api_version"]}
        chat = chat_path(payload)
        attachments = payload.get("attachments") or ()
        body: dict[str, Any] = {"json": {"body": payload["body"]}}
        if attachments:
            files = [
                ("files", (a["file_name"], base64.b64decode(a["content"]), a["mime_type"]))
                for a in attachments
            ]
            body = {"data": {"message": payload["body"]}, "files": files}
        result = self.request(
            "POST",
            f"{chat}/attachments" if attachments else f"{chat}/messages",
            headers=headers,
            on_success=_accepted,
            is_permanent=lambda response: self._chat_missing(response, headers),
            **body,
        )
        return self._follow_found(result, headers)

    def _chat_missing(self, response: requests.Response, headers: Mapping[str, str]) -> bool:
        """A 404 names the chat, not the endpoint, when the API itself answers ``GET /me``."""
        if response.status_code != 404 or not self.pace():
            return False
        try:
            return self.http("GET", "/me", headers=headers).status_code != 404
        except requests.RequestException:
            return False

    def _follow_found(self, result: SendResult, headers: Mapping[str, str]) -> SendResult:
        """A 302 answer: read its ``Location`` once with a GET, never post again."""
        if result.http_status != 302 or not result.location:
            return result
        root = urlsplit(self.settings["base_url"])
        target = urlsplit(urljoin(self.url("/"), result.location))
        if (target.scheme, target.netloc) != (root.scheme, root.netloc):
            return replace(result, reason=f"{result.reason}; Location on another host not followed")
        if not self.pace():
            return replace(result, reason=f"{result.reason}; Location not read: the engine is stopping")
        try:
            response = self.session.get(
                target.geturl(),
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return replace(result, reason=f"{result.reason}; Location: {type(exc).__name__}")
        if 200 <= response.status_code < 300:
            return replace(_accepted(response), http_status=302)
        return replace(result, reason=f"{result.reason}; Location answered HTTP {response.status_code}")

    def authorization_url(self, state: str) -> str:
        """Where the operator authorises Courier (step 1 of ``courier kpn authorize``)."""
        s = self.settings
        return kpn_oauth.authorization_url(
            s["authorize_url"],
            client_id=s["client_id"],
            redirect_uri=s["redirect_uri"],
            scope=s["scope"],
            state=state,
        )

    def exchange_code(self, code: str) -> kpn_oauth.KpnToken:
        """The access token for an authorization code (step 3 of ``courier kpn authorize``)."""
        s = self.settings
        return kpn_oauth.exchange_code(
            self.session,
            s["token_url"],
            client_id=s["client_id"],
            client_secret=s["client_secret"],
            code=code,
            redirect_uri=s["redirect_uri"],
            timeout=self.timeout,
            verify=self.verify,
        )


def account_rate(settings: Mapping[str, Any]) -> AccountRate:
    """KPN's limit counts the calls of one OAuth client, whichever destination or node makes them."""
    return AccountRate(f"kpn:{settings['client_id']}", settings["requests_per_second"] * PACING)


def chat_path(payload: Mapping[str, Any]) -> str:
    """``/conversations/{id}``, ``/groupchats/{id}`` or their ``/aux/...`` forms."""
    resource = "conversations" if payload["chat_type"] == "conversation" else "groupchats"
    if not is_blank(payload.get("aux_id")):
        return f"/aux/{resource}/{quote(str(payload['aux_id']), safe='')}"
    return f"/{resource}/{quote(str(payload['chat_id']), safe='')}"


def _accepted(response: requests.Response) -> SendResult:
    message_id = get_ci(json_body(response), "id")
    remote_id = str(message_id) if message_id is not None else None
    ids = {"id": remote_id} if remote_id else {}
    return SendResult(Outcome.ACCEPTED, remote_id=remote_id, vendor_ids=ids)
