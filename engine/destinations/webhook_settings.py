"""Settings of the webhooks a vendor calls Courier on, declared once for every vendor with them.

``webhook_allow_from`` (source networks let in before authentication) and
``webhook_max_body_bytes`` (413 above) are the same keys for MedAllies and Qliq; only the
default body limit differs. :func:`path_token_problem` is the one rule for a secret path
token: 128 random bits at least, checked by ``courier check`` and again when the routes are
built.
"""

from __future__ import annotations

import ipaddress
import re

from engine.spec import Field, integer, string_list
from engine.spec.parse import looks_like_key

MIN_TOKEN_CHARS = 22  # 22 URL-safe Base64 characters carry 132 bits: secrets.token_urlsafe(16)
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_MAX_BODY_LIMIT = 64 * 1024 * 1024


def network_problem(text: str) -> str | None:
    """An IPv4/IPv6 network (``203.0.113.0/24``) or one address; None when fine."""
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        return f"{text!r} is not a network such as 203.0.113.0/24, 2001:db8::/32 or one address"
    return None


def path_token_problem(token: str) -> str | None:
    """Why ``token`` is no secret path segment (the message never quotes it); None when fine.

    A value still holding ``${`` is an unresolved reference (``courier check --skip-env``),
    checked once the environment is there.
    """
    if "${" in token:
        return None
    if not _URL_SAFE.fullmatch(token):
        return "the path token may hold only letters, digits, '-' and '_'"
    if len(token) < MIN_TOKEN_CHARS or not looks_like_key(token):
        return (
            f"the path token is guessable: use at least {MIN_TOKEN_CHARS} random URL-safe characters "
            "(128 bits), e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(16))'"
        )
    return None


def webhook_fields(max_body_bytes: int, what: str) -> tuple[Field, ...]:
    """The keys every vendor webhook has; ``what`` names the webhooks in the docs."""
    return (
        string_list(
            "webhook_allow_from",
            f"Source networks {what} accepts (checked before authentication; 403 from elsewhere); "
            "empty lets any address try to authenticate.",
            default=(),
            check=network_problem,
            example=["203.0.113.0/24"],
        ),
        integer(
            "webhook_max_body_bytes",
            f"Largest request body {what} reads (413 above, before reading it).",
            default=max_body_bytes,
            min=1024,
            max=_MAX_BODY_LIMIT,
        ),
    )
