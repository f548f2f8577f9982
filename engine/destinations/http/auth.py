"""The request headers each ``auth`` mode adds, computed over the exact body bytes sent.

``hmac`` signs ``<timestamp>.<body>`` with HMAC-SHA256 (the Stripe/Slack scheme): the receiver
recomputes it with the shared secret, compares in constant time and refuses old timestamps,
so a captured request cannot be replayed later or altered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

MODES = ("none", "basic", "bearer", "hmac", "header")
#: The secret (or user name) each mode needs in the settings.
NEEDS: Mapping[str, tuple[str, ...]] = {
    "none": (),
    "basic": ("username", "password"),
    "bearer": ("token",),
    "hmac": ("signing_secret",),
    "header": ("auth_value",),
}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``timestamp + "." + body`` with ``secret``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def auth_headers(settings: Mapping[str, Any], body: bytes, now: float) -> dict[str, str]:
    """The headers the configured ``auth`` mode adds to one request."""
    mode = settings["auth"]
    if mode == "basic":
        pair = f"{settings['username']}:{settings['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    if mode == "bearer":
        return {"Authorization": f"Bearer {settings['token']}"}
    if mode == "hmac":
        timestamp = str(int(now))
        return {
            settings["timestamp_header"]: timestamp,
            settings["signature_header"]: signature(settings["signing_secret"], timestamp, body),
        }
    if mode == "header":
        return {settings["auth_header"]: settings["auth_value"]}
    return {}
