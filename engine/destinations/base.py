"""The one interface every destination implements, and the values it returns.

A destination turns a mapped payload (a dict of named fields produced by a mapping file) into
one vendor's HTTP request, sends it, and classifies the answer. It is plain blocking code: the
dispatcher calls :meth:`Destination.send` in a worker thread, so nothing here touches Twisted.
Destinations keep no state between messages; anything the queue must remember (a Qliq
conversation id, a token) goes in and comes out as arguments and results.
"""

from __future__ import annotations

import abc
import enum
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol

import requests

from engine.errors import CourierError
from engine.spec import Problem as SettingsProblem
from engine.spec import Spec

#: Namespace for the deterministic vendor message ids (uuid5 of the idempotency key), so a
#: resend of the same stored delivery carries the same id and the vendor can spot duplicates.
MESSAGE_ID_NAMESPACE = uuid.UUID("5b0c2f4e-8d1a-5c7e-9f3b-6a2d4e8c1b70")


def message_uuid(idempotency_key: str) -> uuid.UUID:
    """The vendor message id for one delivery: stable across retries and restarts."""
    return uuid.uuid5(MESSAGE_ID_NAMESPACE, idempotency_key)


class Outcome(enum.Enum):
    """What the queue does next with a delivery (Mirth words in the comments)."""

    ACCEPTED = "accepted"  # vendor took it -> SENT
    RETRY = "retry"  # transient: network, timeout, 408, 429, 5xx -> QUEUED, later, attempt counted
    REJECTED = "rejected"  # permanent: the vendor refused this message -> ERROR, report AR
    # The set-up, not the message, is wrong: credentials wrong or expired (HTTP 401, or no
    # token yet), not authorised (403), no such endpoint (404), DNS or TLS verification
    # failed. The message is fine, so rejecting it would be wrong and retrying burns attempts
    # for nothing: the queue holds the destination, keeps the message QUEUED *without counting
    # an attempt*, probes again after ``retry_after_s`` and tells the operator ``reason``
    # (e.g. "KPN token expired: run courier kpn authorize") and the short ``hold`` word.
    AUTH_FAILED = "auth_failed"


@dataclass(frozen=True)
class InvalidParameter:
    """One field the vendor named as wrong (RFC 7807 ``invalidParameters``), for HL7 ERR.

    The vendor may echo the offending value too; it is dropped on purpose because it can be
    PHI and the sender already has its own data.
    """

    name: str
    reason: str


@dataclass(frozen=True)
class SendResult:
    """The classified answer to one send.

    ``reason`` is our words plus the vendor's error text (``vendor_text``), which can echo a
    field value, so PHI: it is stored encrypted and reported to the sender, while logs show
    :attr:`loggable_reason`.
    """

    outcome: Outcome
    remote_id: str | None = None  # the vendor's id for status polling
    vendor_ids: Mapping[str, str] = field(default_factory=dict)  # every id the vendor returned
    conversation_id: str | None = None  # Qliq: remember per thread key, pass back on follow-ups
    reason: str = ""
    invalid_parameters: tuple[InvalidParameter, ...] = ()
    retry_after_s: float | None = None  # the vendor's Retry-After, when it sent one
    http_status: int | None = None
    progress: str | None = None  # a send of several requests that failed part way: pass back as resume
    vendor_text: str = ""  # the part of ``reason`` the vendor wrote
    hold: str | None = None  # AUTH_FAILED: why the destination is held ("auth", "dns", ...)
    location: str | None = None  # a 3xx answer's Location, for a vendor that documents one

    @property
    def loggable_reason(self) -> str:
        """``reason`` with the vendor's own words left out."""
        return (
            self.reason.replace(self.vendor_text, "(vendor text not logged)")
            if self.vendor_text
            else self.reason
        )


StatusState = Literal["accepted", "pending", "delivered", "read", "failed", "expired"]


@dataclass(frozen=True)
class StatusUpdate:
    """One normalised delivery state from a vendor's status API (one per recipient)."""

    state: StatusState
    at: datetime | None = None
    recipient: str | None = None
    detail: str = ""  # the vendor's own status word, for the audit trail


@dataclass(frozen=True)
class Problem:
    """A pre-flight finding: the HL7 ACK refuses the message with AR before it is stored.

    ``code`` is from HL7 table 0357: 101 required field missing, 102 data type error,
    103 table value not found, 104 value too long, and 207 (application internal error) for a
    payload key the destination does not know, which is the mapping's fault, not the
    sender's. ``text`` names the field, never its value.
    """

    key: str
    code: int
    text: str


class TokenProvider(Protocol):
    """Where a destination gets its bearer/access token (KPN OAuth, conneQt AccessToken).

    The caller keeps the token encrypted in the store; the destination only reads it, once per
    send, so a token refreshed by ``courier kpn authorize`` is picked up without a restart.
    """

    def token(self) -> str | None:
        """The current token, or None when none has been obtained yet."""
        ...


@dataclass(frozen=True)
class StaticToken:
    """A token given directly in the settings (from an env var or a file)."""

    value: str | None

    def token(self) -> str | None:
        return self.value


class DestinationError(CourierError):
    """A destination helper (token exchange, authorization) could not do what was asked."""


def _unpaced() -> bool:
    return True


class Destination(abc.ABC):
    """One vendor API. Subclasses declare their specs and implement validate/send."""

    kind: ClassVar[str]
    settings_spec: ClassVar[Spec]  # channel ``[destinations.settings]``
    payload_spec: ClassVar[Spec | None]  # what a mapping must/may produce; None: any keys (open)
    has_status_api: ClassVar[bool] = False

    def __init__(
        self,
        settings: Mapping[str, Any],
        session: requests.Session,
        *,
        token_provider: TokenProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``settings`` is the channel's table parsed with ``settings_spec`` (defaults filled
        in, secrets resolved); ``session`` is this destination's own connection pool."""
        self.settings = settings
        self.session = session
        self.token_provider = token_provider
        self.clock = clock  # epoch seconds; validate() compares expiry times with it
        self.pace: Callable[[], bool] = _unpaced
        """Call before each request of a send after its first (the queue paces the first):
        blocks until the rate limits let one more go; False when the queue is stopping and the
        request should not be made. The queue sets it; by default every request may go."""

    @classmethod
    def settings_problems(cls, settings: Mapping[str, Any], given: Collection[str]) -> list[SettingsProblem]:
        """Rules across keys of ``settings`` that no single key's spec can state (``courier
        check`` and the engine's start both ask). ``given`` names the keys the channel file set
        (a ``*_file`` secret counts, even when ``--skip-env`` left it unread)."""
        return []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    @abc.abstractmethod
    def validate(self, payload: Mapping[str, Any]) -> list[Problem]:
        """Every rule the vendor documents, checked without I/O before the HL7 ACK."""

    @abc.abstractmethod
    def send(
        self,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str,
        conversation_id: str | None = None,
        resume: str | None = None,
    ) -> SendResult:
        """Deliver one payload. Blocking; runs in a worker thread. Never raises for HTTP.

        ``resume`` is the ``progress`` of this delivery's last failed attempt, if it had any.
        """

    def check_status(self, remote_id: str) -> list[StatusUpdate]:
        """Ask the vendor for the delivery state of ``remote_id`` (one update per recipient).

        Raises :class:`DestinationError` when the vendor cannot answer; ask again later.
        """
        raise NotImplementedError(f"{self.kind} has no status API")
