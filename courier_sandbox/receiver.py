"""A generic JSON receiver: the sandbox of ``type = "http"``, Courier's plain HTTP sender.

There is no vendor document: the contract is the one Courier's README states for any
receiver, read here on its own. ``POST``, ``PUT`` or ``PATCH`` on any path (outside
``/_sandbox/``) with a JSON object body is accepted when it carries one valid credential:

- Basic ``courier`` / ``http_password``; ``Authorization: Bearer <http_token>``;
  ``X-Api-Key: <http_api_key>``;
- or ``X-Courier-Timestamp`` (Unix seconds) and ``X-Courier-Signature: sha256=<hex>``, the
  HMAC-SHA256 of timestamp + "." + the exact body bytes with ``http_signing_secret``; a
  timestamp more than ``max_skew_s`` (300) from the sandbox's clock is refused, so a captured
  request cannot be replayed later.

A missing or wrong credential answers 401; ``POST /_sandbox/config {"auth": "hmac"}`` accepts
only that mode (``any``, the default, accepts each of them). A body that is not a JSON object
answers 400. An accepted request answers ``accepted_status`` (200, or 201 when configured) with
``{"id": …}``.

``Idempotency-Key`` (decided here, as Stripe does): the same key with the same body answers
the first answer again (same id) and counts a duplicate, so a retry after a lost answer is
harmless; the same key with another body is a client error, 409. Messages, duplicate counts
and the keys survive a restart (:mod:`courier_sandbox.persistence`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Any

from courier_sandbox.base import Route, VendorSandbox
from courier_sandbox.credentials import Credentials, matches
from courier_sandbox.http import ParsedRequest, Reply, json_reply
from courier_sandbox.recording import fingerprint

AUTH_MODES = ("any", "basic", "bearer", "header", "hmac")
SIGNATURE_HEADER = "x-courier-signature"
TIMESTAMP_HEADER = "x-courier-timestamp"
API_KEY_HEADER = "x-api-key"
IDEMPOTENCY_HEADER = "idempotency-key"
ANY_PATH = r"/(?!_sandbox/).*"


@dataclass
class ReceiverSettings:
    """What ``POST /_sandbox/config`` may change."""

    auth: str = "any"
    max_skew_s: float = 300.0
    accepted_status: int = 200


class HttpReceiverSandbox(VendorSandbox):
    """Records every request; accepts authenticated JSON objects; faults as every sandbox."""

    name = "http"

    def __init__(self, reactor: Any, *, credentials: Credentials, **kwargs: Any) -> None:
        super().__init__(reactor, **kwargs)
        self.credentials = credentials
        self.settings = ReceiverSettings()
        self.keys: dict[str, str] = {}  # Idempotency-Key → message id

    def routes(self) -> list[Route]:
        return [Route(method, ANY_PATH, self.receive) for method in ("POST", "PUT", "PATCH")]

    def configure(self, settings: dict[str, Any]) -> None:
        for name, value in settings.items():
            if not hasattr(self.settings, name):
                raise ValueError(f"unknown http setting {name!r}")
            if name == "auth" and value not in AUTH_MODES:
                raise ValueError(f"auth must be one of {', '.join(AUTH_MODES)}")
            if name == "accepted_status" and value not in (200, 201):
                raise ValueError("accepted_status must be 200 or 201")
            setattr(self.settings, name, value)

    def reset_vendor(self) -> None:
        self.keys.clear()

    def vendor_snapshot(self) -> dict[str, Any]:
        return {"keys": self.keys}

    def restore_vendor(self, saved: dict[str, Any]) -> None:
        self.keys.update(saved["keys"])

    # -- the endpoint ------------------------------------------------------------------
    def receive(self, request: ParsedRequest) -> Reply:
        mode = self.authenticated_by(request)
        if mode is None:
            return self.error_reply(401, "missing or invalid credentials")
        if request.json_error or not isinstance(request.json, dict):
            return self.error_reply(400, "the body must be a JSON object (Content-Type: application/json)")
        content = fingerprint({"path": request.path, "body": request.json})
        key = request.header(IDEMPOTENCY_HEADER)
        if key and key in self.keys:
            first = self.keys[key]
            if self.state.messages[first]["fingerprint"] != content:
                return self.error_reply(409, "Idempotency-Key reused with a different request")
            self.state.duplicates[first] += 1
            return json_reply(self.settings.accepted_status, {"id": first})
        message_id = str(uuid.uuid4())
        self.state.messages[message_id] = {
            "method": request.method,
            "path": request.path,
            "body": request.json,
            "auth": mode,
            "idempotency_key": key,
            "fingerprint": content,
            "received_at": self.now(),
        }
        if key:
            self.keys[key] = message_id
        return json_reply(self.settings.accepted_status, {"id": message_id})

    def authenticated_by(self, request: ParsedRequest) -> str | None:
        """The auth mode whose valid credential the request carries (as configured), or None."""
        checks = {
            "basic": self._basic,
            "bearer": self._bearer,
            "header": self._api_key,
            "hmac": self._signed,
        }
        allowed = checks if self.settings.auth == "any" else {self.settings.auth: checks[self.settings.auth]}
        return next((mode for mode, check in allowed.items() if check(request)), None)

    def _basic(self, request: ParsedRequest) -> bool:
        scheme, _, encoded = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return matches(user, self.credentials.http_user) & matches(password, self.credentials.http_password)

    def _bearer(self, request: ParsedRequest) -> bool:
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and matches(token, self.credentials.http_token)

    def _api_key(self, request: ParsedRequest) -> bool:
        return matches(request.header(API_KEY_HEADER), self.credentials.http_api_key)

    def _signed(self, request: ParsedRequest) -> bool:
        timestamp = request.header(TIMESTAMP_HEADER) or ""
        if not timestamp.isdigit() or abs(self.now() - int(timestamp)) > self.settings.max_skew_s:
            return False
        return matches(
            request.header(SIGNATURE_HEADER),
            signature(self.credentials.http_signing_secret, timestamp, request.raw),
        )


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of timestamp + "." + body: what a signed request must carry."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
