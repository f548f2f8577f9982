"""A generic JSON/HTTP sender: the mapping's output, as a JSON object, to one URL.

What the issue left open, decided here:

* The payload is open: any key a mapping produces goes into the JSON body as is (flat values
  and the ``[each.*]`` lists of tables), so ``payload_spec`` is None, which tells ``courier
  check`` there are no payload keys to compare.
* ``headers`` is a table of plain values. The spec resolves ``${ENV}`` and ``*_file`` secrets
  only in declared keys, so a secret header goes through ``auth`` (``bearer``, ``basic``,
  ``hmac`` or ``header`` with ``auth_header`` + ``auth_value``); a header value that is an
  ``${ENV}`` reference or looks like a credential is refused by ``courier check``.
* Answers: ``accepted_statuses`` → SENT; ``hold_statuses`` hold the destination (the core's
  AUTH_FAILED: no attempt counted, the operator told, retried later) because a wrong URL or
  credentials fail every message alike; ``retry_statuses`` → retried, honouring Retry-After;
  anything else, 3xx included, → rejected: a POST is never resent on a redirect, and redirects
  are not followed.
* The idempotency header carries the delivery's idempotency key, the same on every retry and
  after a restart, so a receiver can drop a duplicate the network made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

import requests

from engine.destinations.base import Outcome, Problem, SendResult
from engine.destinations.http import statuses
from engine.destinations.http.auth import MODES, NEEDS, auth_headers
from engine.destinations.transport import HttpDestination, http_settings_spec
from engine.spec import Problem as SettingsProblem
from engine.spec import Spec, looks_like_key, string, string_list, table

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 header name
#: Headers Courier writes itself: set in ``headers`` they would contradict the body or ``auth``.
_OWN_HEADERS = frozenset({"authorization", "content-type", "content-length", "host", "transfer-encoding"})
_COMMON = tuple(f for f in http_settings_spec("http", "").fields if f.name != "base_url")


def _http_url(text: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+", text) else "must be an http:// or https:// URL"


def _header_name(text: str) -> str | None:
    if not _TOKEN.match(text):
        return "must be an HTTP header name"
    return "is set by Courier" if text.lower() in _OWN_HEADERS else None


def _optional_header_name(text: str) -> str | None:
    return _header_name(text) if text else None


SETTINGS_SPEC = Spec(
    "http settings",
    "Where and how to send the mapping's output as JSON.",
    (
        string(
            "url",
            "The full URL the JSON is sent to.",
            required=True,
            check=_http_url,
            example="https://api.example.org/v1/results",
        ),
        string("method", "HTTP method.", default="POST", choices=("POST", "PUT", "PATCH")),
        table(
            "headers",
            "Extra headers, plain text (a secret goes in `auth`, never here).",
            discriminator="method",
            variants=dict,  # a free table: no variant, checked by settings_problems
        ),
        string("auth", "How requests authenticate.", default="none", choices=MODES),
        string("username", "User name (auth = basic)."),
        string("password", "Password (auth = basic).", secret=True),
        string("token", "Bearer token (auth = bearer).", secret=True),
        string("signing_secret", "HMAC-SHA256 key (auth = hmac).", secret=True),
        string(
            "signature_header",
            'Header of `sha256=<hex>`, the HMAC of timestamp + "." + body (auth = hmac).',
            default="X-Courier-Signature",
            check=_header_name,
        ),
        string(
            "timestamp_header",
            "Header of the signed Unix time in seconds (auth = hmac).",
            default="X-Courier-Timestamp",
            check=_header_name,
        ),
        string(
            "auth_header",
            "Header that carries `auth_value` (auth = header).",
            default="X-Api-Key",
            check=_header_name,
        ),
        string("auth_value", "Its secret value (auth = header).", secret=True),
        string(
            "idempotency_header",
            'Header carrying the delivery\'s idempotency key, the same on every retry; "" sends none.',
            default="Idempotency-Key",
            check=_optional_header_name,
        ),
        string_list(
            "accepted_statuses",
            "Answers that mean accepted (2xx only).",
            default=("2xx",),
            check=statuses.check_class,
        ),
        string_list(
            "retry_statuses",
            "Answers retried later, after Retry-After when given.",
            default=("408", "425", "429", "5xx"),
            check=statuses.check_class,
        ),
        string_list(
            "hold_statuses",
            "Answers that hold the destination, not the message (set-up errors).",
            default=("401", "403", "404"),
            check=statuses.check_class,
        ),
        *_COMMON,
    ),
)


class JsonHttpDestination(HttpDestination):
    """The mapping's output, as JSON, to ``url``; classified by the configured status lists."""

    kind = "http"
    settings_spec = SETTINGS_SPEC
    payload_spec = None  # open: any key the mapping produces
    auth_failed_reason = "the HTTP endpoint refused the set-up: check url and credentials"

    @classmethod
    def settings_problems(cls, settings: Mapping[str, Any], given: Collection[str]) -> list[SettingsProblem]:
        problems = [
            SettingsProblem(key, f"required when auth = {settings['auth']!r}")
            for key in NEEDS.get(settings.get("auth") or "none", ())
            if key not in given
        ]
        problems += _header_problems(settings.get("headers") or {})
        problems += _status_problems(settings)
        return problems

    def url(self, path: str) -> str:
        return self.settings["url"]

    def validate(self, payload: Mapping[str, Any]) -> list[Problem]:
        """Only that the output is JSON (no NaN or infinity): the receiver's contract is the
        mapping's to follow."""
        try:
            json.dumps(payload, allow_nan=False)
        except ValueError:
            return [Problem("(body)", 102, "the mapping's output holds a number JSON cannot carry")]
        return []

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str, **_: Any) -> SendResult:
        """One request; no conversations and nothing to resume, so the other arguments are unused."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        headers = {**self.settings["headers"], "Content-Type": "application/json"}
        if self.settings["idempotency_header"]:
            headers[self.settings["idempotency_header"]] = idempotency_key
        headers.update(auth_headers(self.settings, body, self.clock()))
        result = self.request(
            self.settings["method"], "", data=body, headers=headers, on_success=self._answer
        )
        if result.http_status is None or result.outcome is Outcome.ACCEPTED:
            return result  # no answer (network, TLS, timeout: retried) or accepted
        return self._classified(result)

    def _answer(self, response: requests.Response) -> SendResult:
        """A 2xx: accepted when listed, else rejected like any unlisted answer."""
        if statuses.matches(response.status_code, self.settings["accepted_statuses"]):
            return SendResult(Outcome.ACCEPTED, reason=f"HTTP {response.status_code}")
        return SendResult(Outcome.REJECTED, reason=f"HTTP {response.status_code}: not an accepted status")

    def _classified(self, result: SendResult) -> SendResult:
        """A non-2xx answer by the configured classes; the reason worded here for every class,
        so it reads the same whatever the shared transport says for that status."""
        status = result.http_status or 0
        reason = f"HTTP {status}: {result.vendor_text}"
        if statuses.matches(status, self.settings["hold_statuses"]):
            return replace(
                result, outcome=Outcome.AUTH_FAILED, reason=f"{self.auth_failed_reason} ({reason})"
            )
        if statuses.matches(status, self.settings["retry_statuses"]):
            return replace(result, outcome=Outcome.RETRY, reason=reason)
        if 300 <= status < 400:
            reason += " (redirects are not followed, and a message is never resent on one)"
        return replace(result, outcome=Outcome.REJECTED, reason=reason)


def _header_problems(headers: Mapping[str, Any]) -> list[SettingsProblem]:
    problems = []
    for name, value in headers.items():
        key = f"headers.{name}"
        if not isinstance(name, str) or not _TOKEN.match(name):
            problems.append(SettingsProblem(key, "is not an HTTP header name"))
        elif name.lower() in _OWN_HEADERS:
            problems.append(SettingsProblem(key, "is set by Courier; use auth for credentials"))
        elif not isinstance(value, str) or "\r" in value or "\n" in value:
            problems.append(SettingsProblem(key, "must be one line of text"))
        elif "${" in value or looks_like_key(value):
            problems.append(
                SettingsProblem(
                    key, "headers are plain text: put a secret in auth (bearer, basic, hmac or header)"
                )
            )
    return problems


def _status_problems(settings: Mapping[str, Any]) -> list[SettingsProblem]:
    """Only 2xx can be accepted; a 2xx or 3xx is never retried nor held (3xx: no resend)."""
    problems = [
        SettingsProblem("accepted_statuses", f"{c} is not a 2xx answer")
        for c in statuses.outside(settings.get("accepted_statuses") or (), "2")
    ]
    for key in ("retry_statuses", "hold_statuses"):
        problems += [
            SettingsProblem(key, f"{c}: only 4xx and 5xx answers can be retried or held")
            for c in statuses.outside(settings.get(key) or (), "45")
        ]
    return problems
