"""HTTP plumbing shared by the destinations: one request, one classified result.

The classification is the same for every vendor (what differs is how each one words its error
body, passed in as ``describe_error``):

* 2xx → the vendor-specific ``on_success``;
* network error, timeout, 408, 429, 5xx → RETRY, with Retry-After (seconds or HTTP date);
* a set-up error → AUTH_FAILED, which holds the destination (see :class:`Outcome`) with a
  short fixed ``hold`` word: 401 "auth", 403 "forbidden", 404 "endpoint not found" (no
  vendor document tells a missing endpoint from a missing resource in its error body, and
  the requests go to fixed endpoints), a DNS failure "dns", a failed TLS verification "tls".
  One wrong base URL or key must hold the queue, not fail every message in it for good;
* 3xx → REJECTED: a POST is never resent on a redirect (it may have been processed), and
  requests never follow redirects; a vendor that documents a ``Location`` follows it itself;
* any other 4xx → REJECTED with the vendor's reason.
"""

from __future__ import annotations

import email.utils
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from engine.destinations.base import (
    Destination,
    DestinationError,
    InvalidParameter,
    Outcome,
    SendResult,
)
from engine.spec import Field, Spec, number, path, string

ErrorDescription = tuple[str, tuple[InvalidParameter, ...]]

RETRYABLE_STATUSES = frozenset({408, 429})
#: Answers that say the destination's set-up is wrong, with the word shown to the operator.
SETUP_STATUSES = {401: "auth", 403: "forbidden", 404: "endpoint not found"}
#: What a hold says for each set-up error before the HTTP detail.
SETUP_ADVICE = {
    "forbidden": "not authorised for this API: check the account's permissions",
    "endpoint not found": "no such endpoint: check base_url",
    "dns": "host name not found: check base_url",
    "tls": "TLS certificate not verified: check base_url and ca_file",
}


MAX_RETRY_AFTER_S = 86400.0
"""The longest wait a vendor's Retry-After can ask for: a day, whatever it says, so a wrong or
hostile header cannot park deliveries (or hold a destination) for ever."""


def pooled_session(connections: int) -> requests.Session:
    """A session that keeps up to ``connections`` connections per host open for reuse.

    requests keeps 10 by default: a destination with a higher ``concurrency`` opened a new
    TCP (and TLS) connection for every request above ten and threw it away afterwards.
    """
    session = requests.Session()
    adapter = HTTPAdapter(pool_maxsize=connections)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3), at most
    :data:`MAX_RETRY_AFTER_S`; None when it is neither."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - (now or datetime.now(UTC))).total_seconds()), MAX_RETRY_AFTER_S)


def json_body(response: requests.Response) -> Any:
    """The response's JSON, or None when the body is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def get_ci(data: Any, key: str) -> Any:
    """``data[key]`` with the key matched case-insensitively (vendors vary the case)."""
    if not isinstance(data, Mapping):
        return None
    wanted = key.lower()
    return next((v for k, v in data.items() if isinstance(k, str) and k.lower() == wanted), None)


def connection_setup_error(exc: BaseException) -> str | None:
    """ "dns" or "tls" when a failed connection says the set-up is wrong, else None (transient).

    requests wraps the cause several levels deep (ConnectionError → MaxRetryError →
    NameResolutionError → gaierror), through ``args``, ``reason`` and ``__cause__``.
    """
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, socket.gaierror):
            return "dns"
        if isinstance(error, ssl.SSLCertVerificationError):
            return "tls"
        pending += [*error.args, getattr(error, "reason", None), error.__cause__, error.__context__]
    return None


def generic_error(response: requests.Response) -> ErrorDescription:
    """Fallback wording: the vendor's ``message``/``error``/``result`` or the HTTP reason."""
    body = json_body(response)
    for key in ("message", "error", "result", "title", "detail"):
        text = get_ci(body, key)
        if isinstance(text, str) and text:
            return text, ()
    return response.reason or f"HTTP {response.status_code}", ()


def classify(
    response: requests.Response,
    *,
    on_success: Callable[[requests.Response], SendResult],
    describe_error: Callable[[requests.Response], ErrorDescription] = generic_error,
    is_permanent: Callable[[requests.Response], bool] = lambda _: False,
    auth_failed_reason: str,
) -> SendResult:
    """Turn one HTTP response into a :class:`SendResult` (rules in the module docstring).

    ``is_permanent`` lets a vendor declare an error final whatever its status code
    (conneQt: content-related errors must never be resent).
    """
    status = response.status_code
    if 200 <= status < 300:
        return replace(on_success(response), http_status=status)
    vendor_reason, invalid = describe_error(response)
    reason = f"HTTP {status}: {vendor_reason}"
    hold = SETUP_STATUSES.get(status)
    if is_permanent(response):
        outcome, hold = Outcome.REJECTED, None
    elif hold is not None:
        outcome = Outcome.AUTH_FAILED
        advice = auth_failed_reason if status == 401 else SETUP_ADVICE[hold]
        reason = f"{advice} ({reason})"  # what the operator must do comes first
    elif 300 <= status < 400:
        outcome = Outcome.REJECTED
        reason = f"HTTP {status} redirect: a message is never sent twice on a redirect"
    elif status in RETRYABLE_STATUSES or status >= 500:
        outcome = Outcome.RETRY
    else:
        outcome = Outcome.REJECTED
    return SendResult(
        outcome,
        hold=hold,
        location=response.headers.get("Location") if 300 <= status < 400 else None,
        reason=reason,
        invalid_parameters=invalid,
        retry_after_s=retry_after_seconds(response.headers.get("Retry-After")),
        http_status=status,
        vendor_text=vendor_reason,
    )


class HttpDestination(Destination):
    """A destination reached over HTTPS with the common settings (base_url, timeouts, ca_file)."""

    #: Reason shown for 401 when a subclass has nothing more specific to say.
    auth_failed_reason = "credentials rejected: check the destination's secrets"

    def url(self, path: str) -> str:
        return self.settings["base_url"].rstrip("/") + path

    def request(
        self,
        method: str,
        path: str,
        *,
        on_success: Callable[[requests.Response], SendResult],
        describe_error: Callable[[requests.Response], ErrorDescription] = generic_error,
        is_permanent: Callable[[requests.Response], bool] = lambda _: False,
        **kwargs: Any,
    ) -> SendResult:
        """Send one request with the configured timeouts and CA, never raising for HTTP."""
        try:
            response = self.http(method, path, **kwargs)
        except requests.Timeout:
            return SendResult(Outcome.RETRY, reason=f"{self.kind}: timed out")
        except requests.RequestException as exc:
            # The exception text can contain the URL (KPN aux ids); the class name is enough.
            hold = connection_setup_error(exc)
            if hold is not None:
                reason = f"{self.kind}: {SETUP_ADVICE[hold]} ({type(exc).__name__})"
                return SendResult(Outcome.AUTH_FAILED, reason=reason, hold=hold)
            return SendResult(Outcome.RETRY, reason=f"{self.kind}: {type(exc).__name__}")
        return classify(
            response,
            on_success=on_success,
            describe_error=describe_error,
            is_permanent=is_permanent,
            auth_failed_reason=self.auth_failed_reason,
        )

    def fetch_json(
        self,
        method: str,
        path: str,
        *,
        purpose: str,
        describe_error: Callable[[requests.Response], ErrorDescription] = generic_error,
        **kwargs: Any,
    ) -> Any:
        """The JSON of a 200 answer (status queries, token exchanges); else DestinationError.

        These calls are not deliveries: there is nothing to classify, the caller just tries
        again later, so one exception type with a PHI-free text is all it needs.
        """
        try:
            response = self.http(method, path, **kwargs)
        except requests.RequestException as exc:
            raise DestinationError(f"{purpose} failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            reason, _ = describe_error(response)
            raise DestinationError(f"{purpose} failed: HTTP {response.status_code}: {reason}")
        return json_body(response)

    def http(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The raw request with the configured timeouts and CA, without redirects."""
        return self.session.request(
            method,
            self.url(path),
            timeout=self.timeout,
            verify=self.verify,
            allow_redirects=False,
            **kwargs,
        )

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.settings["connect_timeout_s"], self.settings["read_timeout_s"])

    @property
    def verify(self) -> str | bool:
        """The sandbox/private CA file when configured, else the system trust store."""
        ca_file = self.settings.get("ca_file")
        return str(ca_file) if ca_file else True


def http_settings_spec(kind: str, doc: str, *fields: Field) -> Spec:
    """A destination's settings: the vendor's own fields between the common HTTP ones."""
    return Spec(
        f"{kind} settings",
        doc,
        (
            string("base_url", "API root, without a trailing path.", required=True),
            *fields,
            number("connect_timeout_s", "Seconds to wait for a connection.", default=5.0, min=0.1),
            number("read_timeout_s", "Seconds to wait for the answer.", default=30.0, min=0.1),
            path("ca_file", "CA bundle that verifies the vendor's HTTPS (e.g. the sandbox CA)."),
        ),
    )
