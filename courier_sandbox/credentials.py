"""The credentials the sandboxes accept: random, made once per installation, never public.

A fixed public demo secret in an example channel is a secret anyone can use against a real
engine (issue 9: a stranger POSTed an MDM^T02 into the hospital's feed with MedAllies'
``sandbox-inbound-secret``). So the example channels take every secret from ``${VAR}``
without a fallback, and ``courier run --sandbox`` / ``courier sandbox`` use the random values
kept in :data:`CREDENTIALS_FILE` (mode 0600): ``run --sandbox`` fills each secret variable the
user left unset with the matching value (:func:`fill_sandbox_secrets`), and the sandboxes
accept exactly those values. User names and the KPN client id are identifiers, not secrets.

=============  ==============================================================================
Qliq           ``api_key``
conneQt        ``ApiKey``; access code (exchanged for an AccessToken); a second ApiKey that is
               valid but not authorised (403)
MedAllies      Basic ``courier`` / password to send; Basic ``readonly`` / password is valid but
               forbidden (403); the sandbox signs its own POSTs (DSN, inbound) with Basic
               ``medallies`` / the webhook secret (the shared secret the vendor gives MedAllies)
KPN            OAuth client ``sandbox-kpn-client`` / client secret
HTTP receiver  any one of: Basic ``courier`` / password, a Bearer token, an ``X-Api-Key``
               value, or the HMAC-SHA256 signing secret (``type = "http"``)
=============  ==============================================================================

A file written before a sandbox was added lacks that sandbox's secrets: they are made and the
file rewritten, so an upgrade keeps the secrets already in use.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from courier_sandbox.persistence import write_atomically


class CredentialsError(Exception):
    """The credentials file cannot be used; the message is one line for the operator."""


ADDED_LATER = ("http_signing_secret", "http_token", "http_password", "http_api_key")
"""Secrets of sandboxes added after the first credentials files were written: made when absent."""
CREDENTIALS_FILE = Path("var/sandbox/credentials.json")
"""Where ``courier run --sandbox`` and ``courier sandbox`` keep the sandboxes' credentials."""


@dataclass(frozen=True)
class Credentials:
    """What each sandbox accepts (and, for webhooks, sends); the secrets have no default."""

    qliq_api_key: str
    conneqt_api_key: str
    conneqt_unauthorised_api_key: str
    conneqt_access_code: str
    medallies_password: str
    medallies_readonly_password: str
    medallies_webhook_secret: str
    kpn_client_secret: str
    http_signing_secret: str
    http_token: str
    http_password: str
    http_api_key: str
    medallies_user: str = "courier"
    medallies_readonly_user: str = "readonly"
    medallies_webhook_user: str = "medallies"
    kpn_client_id: str = "sandbox-kpn-client"
    http_user: str = "courier"

    @classmethod
    def generate(cls) -> Credentials:
        """Fresh random secrets (192 bits each), the identifiers as declared."""
        return cls(**{name: secrets.token_urlsafe(24) for name in _secret_names()})


def _secret_names() -> list[str]:
    return [f.name for f in fields(Credentials) if f.default is MISSING]


def matches(given: object, expected: str) -> bool:
    """Whether a presented secret (any JSON or form value) is the expected one, in constant time."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def load_or_create(path: Path = CREDENTIALS_FILE) -> Credentials:
    """The credentials kept in ``path``; made (random, mode 0600) when the file is absent.

    Raises :class:`CredentialsError` with one line when the file cannot be read or written, is
    readable by others, or is not what this function writes.
    """
    try:
        return _read(path) if path.exists() else _create(path)
    except OSError as exc:
        raise CredentialsError(f"sandbox credentials {path}: {exc.strerror}") from None


def _read(path: Path) -> Credentials:
    if path.stat().st_mode & 0o077:
        raise CredentialsError(f"sandbox credentials {path} can be read by others: chmod 600 it")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        missing = [name for name in ADDED_LATER if name not in saved]
        credentials = Credentials(**saved, **{name: secrets.token_urlsafe(24) for name in missing})
    except (ValueError, TypeError):
        raise CredentialsError(
            f"sandbox credentials {path} are not in the expected form: delete the file to make new ones"
        ) from None
    if missing:  # written before a sandbox was added: keep the old secrets, add the new ones
        write_atomically(path, _as_json(credentials))
    return credentials


def _create(path: Path) -> Credentials:
    credentials = Credentials.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(_as_json(credentials))
    return credentials


def _as_json(credentials: Credentials) -> bytes:
    return (json.dumps(asdict(credentials), indent=2) + "\n").encode()
