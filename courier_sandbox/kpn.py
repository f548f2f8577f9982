"""KPN Healthcare Messenger API sandbox (seed: kpn-healthcare-messenger-api.txt).

OAuth (three-legged, authorization code), as documented:
``GET /healthcaremessenger_oauth/authorize`` auto-approves (the sandbox has no login page)
and redirects (302) to ``redirect_uri?code=..&state=..``; ``POST
/healthcaremessenger_oauth/token`` (form) answers ``{"access_token", "scope",
"token_type": "bearer"}``. Tokens expire after ``token_ttl_s`` (3 days, as the sandbox
note says) and then answer 401. Codes are single use and live ``code_ttl_s``.

API base ``/communication/kpn/healthcare-messenger`` (the KPN REST base), optionally
followed by ``/v1`` (the API is "versionless": no version means the latest). Chats:
``conversations/{id}``, ``groupchats/{id}``, and by auxiliary id
``aux/conversations/{auxId}``, ``aux/groupchats/{auxId}`` — the Alterdesk form the KPN
sandbox runs on (reference §4.2); the often-assumed ``conversations/aux/{id}`` is 404.
Under a chat: ``POST messages`` (JSON ``{"body"}``), ``POST attachments`` (multipart:
one or more ``files`` parts plus a ``message`` field), ``GET messages/{id}``.
``GET me`` answers the authorised user.

Decisions where the document is silent:

- Sends answer 201 Created with ``{"id", ...}``; reading needs scope ``read``, sending
  ``write`` (else 403). The rate limit is 30 calls per second per token (429, Retry-After).
- Error bodies (undocumented) are ``{"error": <reason>}``; OAuth errors use RFC 6749 codes.
- ``redirect_uri`` must equal ``callback_url`` when one is configured; by default any http(s)
  URL is accepted (no registration form in the sandbox).
- Chat ids (:class:`KpnDirectory`): conversations ``sandbox-user-1``/``sandbox-user-2``,
  groupchats ``sandbox-group-1``; aux ids ``patient-0001`` (conversation with user 1) and
  ``ward-7`` (group 1).
- The API has no client message id; identical sends to one chat count as duplicates of the
  first message's id.
- Versions: "If no version is provided in the header it defaults to the latest version". The
  header's name is not printed; the sandbox reads ``version`` and knows only the changelog's
  ``v1.0`` (also written ``1.0``, ``v1``, ``1``). Any other version is 400 (the API is
  "version tight": an unknown version cannot be served); no header means ``v1.0``.
- ``state`` and ``scope`` of ``/authorize`` are not marked mandatory: without ``scope`` the
  grant is ``read``, without ``state`` none is passed back.
- A message's optional ``question`` (reference §4.2) must be an object whose ``options`` is a
  non-empty list of objects with text ``name`` and ``label``; ``multi_answer`` is a boolean
  and ``users`` a list of user ids when present (400 otherwise). The ``message`` text field
  of an attachment upload is optional.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from courier_sandbox.base import Route, VendorSandbox
from courier_sandbox.credentials import Credentials, matches
from courier_sandbox.http import ParsedRequest, Reply, json_reply

OAUTH = r"/healthcaremessenger_oauth"
API = r"/communication/kpn/healthcare-messenger(?:/v1)?"
CHAT = r"/(?P<chat>(?:aux/)?(?:conversations|groupchats)/[^/]+)"
SCOPES = frozenset({"read", "write", "admin"})
RATE_LIMIT = 30  # calls per second per token
THREE_DAYS_S = 3 * 24 * 3600
VERSION = re.compile(r"v?1(?:\.0)?")  # the changelog's only version, v1.0


@dataclass
class KpnDirectory:
    conversations: set[str] = field(default_factory=lambda: {"sandbox-user-1", "sandbox-user-2"})
    groupchats: set[str] = field(default_factory=lambda: {"sandbox-group-1"})
    aux_conversations: dict[str, str] = field(default_factory=lambda: {"patient-0001": "sandbox-user-1"})
    # Two of the example mapping's care-team chats (mappings/mdm_to_kpn.toml) are registered,
    # so the demo (`courier run --sandbox`) delivers; its third, courier-outpatients-4, is left
    # unknown to show a rejection (404).
    aux_groupchats: dict[str, str] = field(
        default_factory=lambda: {
            "ward-7": "sandbox-group-1",
            "courier-ward-7": "sandbox-group-1",
            "courier-emergency-department": "sandbox-group-1",
        }
    )

    def resolve(self, chat: str) -> str | None:
        """The canonical ``conversations/{id}`` or ``groupchats/{id}`` of a chat path."""
        parts = chat.split("/")
        if parts[0] == "aux":
            table = self.aux_conversations if parts[1] == "conversations" else self.aux_groupchats
            target = table.get(parts[2])
            return f"{parts[1]}/{target}" if target else None
        ids = self.conversations if parts[0] == "conversations" else self.groupchats
        return chat if parts[1] in ids else None


@dataclass
class KpnTimings:
    token_ttl_s: float = THREE_DAYS_S
    code_ttl_s: float = 600.0


@dataclass
class _Token:
    scope: frozenset[str]
    expires_at: float
    calls: deque[float] = field(default_factory=deque)


class KpnSandbox(VendorSandbox):
    name = "kpn"
    api_path = "/communication/kpn/healthcare-messenger/v1"

    @property
    def oauth_url(self) -> str:
        """Root of ``/authorize`` and ``/token``."""
        return self.base_url + "/healthcaremessenger_oauth"

    def __init__(
        self,
        reactor: Any,
        *,
        credentials: Credentials,
        timings: KpnTimings | None = None,
        directory: KpnDirectory | None = None,
        callback_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(reactor, **kwargs)
        self.credentials = credentials
        self.timings = timings or KpnTimings()
        self.directory = directory or KpnDirectory()
        self.callback_url = callback_url
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, _Token] = {}

    def routes(self) -> list[Route]:
        return [
            Route("GET", OAUTH + r"/authorize", self.authorize),
            Route("POST", OAUTH + r"/token", self.token),
            Route("GET", API + r"/me", self.me),
            Route("POST", API + CHAT + r"/messages", self.send_message),
            Route("POST", API + CHAT + r"/attachments", self.send_attachments),
            Route("GET", API + CHAT + r"/messages/(?P<message_id>[^/]+)", self.get_message),
        ]

    def control_routes(self) -> list[Route]:
        return [Route("POST", r"/_sandbox/expire_tokens", self._control_expire_tokens)]

    def configure(self, settings: dict[str, Any]) -> None:
        """Also takes directory entries: ``conversations``, ``groupchats`` (lists of ids),
        ``aux_conversations``, ``aux_groupchats`` (aux id → chat id); they are added."""
        for name, value in settings.items():
            if name == "callback_url":
                self.callback_url = value
            elif name in ("conversations", "groupchats", "aux_conversations", "aux_groupchats"):
                getattr(self.directory, name).update(value)
            elif hasattr(self.timings, name):
                setattr(self.timings, name, value)
            else:
                raise ValueError(f"unknown kpn setting {name!r}")

    def reset_vendor(self) -> None:
        self.codes.clear()
        self.tokens.clear()

    def vendor_snapshot(self) -> dict[str, Any]:
        """The access tokens issued (codes live minutes: a restart may forget them)."""
        tokens = self.tokens.items()
        return {"tokens": {key: {"scope": sorted(t.scope), "expires_at": t.expires_at} for key, t in tokens}}

    def restore_vendor(self, saved: dict[str, Any]) -> None:
        for token, t in saved["tokens"].items():
            self.tokens[token] = _Token(frozenset(t["scope"]), t["expires_at"])

    def _control_expire_tokens(self, request: ParsedRequest) -> Reply:
        """Make every issued access token expired now (for out-of-process expiry tests)."""
        for token in self.tokens.values():
            token.expires_at = self.now()
        return json_reply(200, {"expired": len(self.tokens)})

    # -- OAuth -------------------------------------------------------------------------
    def authorize(self, request: ParsedRequest) -> Reply:
        q = request.query
        redirect = q.get("redirect_uri", "")
        if q.get("client_id") != self.credentials.kpn_client_id:
            return self.error_reply(400, "unknown client_id")
        if not re.match(r"https?://\S+$", redirect) or (self.callback_url and redirect != self.callback_url):
            return self.error_reply(400, "redirect_uri does not match the callback URL")
        scope = q.get("scope", "read").split()
        if q.get("response_type") != "code":
            return _redirect(redirect, error="unsupported_response_type", state=q.get("state"))
        if not scope or not set(scope) <= SCOPES:
            return _redirect(redirect, error="invalid_scope", state=q.get("state"))
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "redirect_uri": redirect,
            "scope": frozenset(scope),
            "expires_at": self.now() + self.timings.code_ttl_s,
        }
        return _redirect(redirect, code=code, state=q.get("state"))

    def token(self, request: ParsedRequest) -> Reply:
        if request.content_type != "application/x-www-form-urlencoded":
            return _oauth_error(
                400, "invalid_request", "content type must be application/x-www-form-urlencoded"
            )
        form = request.form
        known_client = form.get("client_id") == self.credentials.kpn_client_id
        if not (known_client and matches(form.get("client_secret"), self.credentials.kpn_client_secret)):
            return _oauth_error(401, "invalid_client", "unknown client or wrong secret")
        if form.get("grant_type") != "authorization_code":
            return _oauth_error(400, "unsupported_grant_type", "must be authorization_code")
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or grant["expires_at"] <= self.now():
            return _oauth_error(400, "invalid_grant", "unknown, used or expired code")
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return _oauth_error(400, "invalid_grant", "redirect_uri does not match")
        access_token = secrets.token_urlsafe(24)
        self.tokens[access_token] = _Token(grant["scope"], self.now() + self.timings.token_ttl_s)
        return json_reply(
            200,
            {"access_token": access_token, "scope": " ".join(sorted(grant["scope"])), "token_type": "bearer"},
        )

    def _authorise(self, request: ParsedRequest, scope: str) -> Reply | None:
        version = request.header("version")
        if version is not None and not VERSION.fullmatch(version.strip()):
            return self.error_reply(400, "unknown API version; this API has v1.0")
        header = request.header("Authorization") or ""
        token = self.tokens.get(header[7:]) if header.lower().startswith("bearer ") else None
        if token is None or token.expires_at <= self.now():
            reply = self.error_reply(401, "missing, unknown or expired access token")
            reply.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return reply
        now = self.now()
        while token.calls and token.calls[0] <= now - 1:
            token.calls.popleft()
        if len(token.calls) >= RATE_LIMIT:
            reply = self.error_reply(429, "rate limit of 30 calls per second exceeded")
            reply.headers["Retry-After"] = "1"
            return reply
        token.calls.append(now)
        if scope not in token.scope:
            return self.error_reply(403, f"token lacks the {scope!r} scope")
        return None

    # -- API ---------------------------------------------------------------------------
    def me(self, request: ParsedRequest) -> Reply:
        refused = self._authorise(request, "read")
        return refused or json_reply(
            200,
            {
                "id": "sandbox-courier",
                "first_name": "Courier",
                "last_name": "Sandbox",
                "company_name": "Sandbox",
            },
        )

    def _writable_chat(self, request: ParsedRequest, chat: str) -> tuple[str, Reply | None]:
        """The canonical chat a send goes to, or the refusal (401/403/429/404)."""
        refused = self._authorise(request, "write")
        if refused:
            return "", refused
        target = self.directory.resolve(chat)
        if target is None:
            return "", self.error_reply(404, "chat not found")
        return target, None

    def send_message(self, request: ParsedRequest, chat: str) -> Reply:
        target, refused = self._writable_chat(request, chat)
        if refused:
            return refused
        if request.json_error or not isinstance(request.json, dict):
            return self.error_reply(400, "send a JSON object")
        body = request.json.get("body")
        if not isinstance(body, str) or not body.strip():
            return self.error_reply(400, "body must be non-empty text")
        problem = _question_problem(request.json.get("question"))
        if problem:
            return self.error_reply(400, problem)
        return self._accept(target, chat, {"body": body, "attachments": []})

    def send_attachments(self, request: ParsedRequest, chat: str) -> Reply:
        target, refused = self._writable_chat(request, chat)
        if refused:
            return refused
        if request.content_type != "multipart/form-data":
            return self.error_reply(400, "send multipart/form-data")
        files = [p for p in request.files if p.name == "files"]
        if not files or len(files) != len(request.files):
            return self.error_reply(400, "attach one or more file parts named 'files'")
        if any(not p.data for p in files):
            return self.error_reply(400, "empty files are refused")
        attachments = [
            {"id": uuid.uuid4().hex, "name": p.filename, "mime_type": p.content_type, "size": len(p.data)}
            for p in files
        ]
        return self._accept(
            target, chat, {"body": request.form.get("message", ""), "attachments": attachments}
        )

    def _accept(self, target: str, chat: str, message: dict[str, Any]) -> Reply:
        content = {
            "chat": target,
            "body": message["body"],
            "files": [(a["name"], a["size"]) for a in message["attachments"]],
        }
        message_id = str(uuid.uuid4())
        self.state.count_if_duplicate(content, message_id)
        record = {
            "id": message_id,
            "chat": target,
            "requested_as": chat,
            "created_at": int(self.now()),
            **message,
        }
        self.state.messages[message_id] = record
        return json_reply(201, record)

    def get_message(self, request: ParsedRequest, chat: str, message_id: str) -> Reply:
        refused = self._authorise(request, "read")
        if refused:
            return refused
        record = self.state.messages.get(message_id)
        if record is None or record["chat"] != self.directory.resolve(chat):
            return self.error_reply(404, "message not found")
        return json_reply(200, record)


def _question_problem(question: Any) -> str | None:
    """What is wrong with a message's optional ``question`` (Alterdesk's form), if anything."""
    if question is None:
        return None
    options = question.get("options") if isinstance(question, dict) else None
    if not isinstance(options, list) or not options:
        return "question.options must be a non-empty list"
    for option in options:
        if not (isinstance(option, dict) and all(isinstance(option.get(k), str) for k in ("name", "label"))):
            return "each question option needs text name and label"
    if not isinstance(question.get("multi_answer", False), bool):
        return "question.multi_answer must be true or false"
    users = question.get("users", [])
    if not (isinstance(users, list) and all(isinstance(u, str | int) for u in users)):
        return "question.users must be a list of user ids"
    return None


def _redirect(uri: str, **params: str | None) -> Reply:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return Reply(302, b"", {"Location": f"{uri}{'&' if '?' in uri else '?'}{query}"})


def _oauth_error(status: int, error: str, description: str) -> Reply:
    return json_reply(status, {"error": error, "error_description": description})
