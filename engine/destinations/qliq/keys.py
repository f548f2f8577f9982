"""The RSA-2048 key pair Qliq encrypts replies with (``courier qliq keys``).

The private key never leaves this machine: it is written once, mode 0600, optionally
encrypted with a passphrase taken from the environment. Only the public key is uploaded,
with ``PUT /secure_messages/set_sender_pubkey?sender=<email>`` (Qliq accepts it only while
the sender is Inactive or Pending).
"""

from __future__ import annotations

import os
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_BITS = 2048
PASSPHRASE_ENV = "COURIER_QLIQ_KEY_PASSPHRASE"


def generate_key_pair(private_key_file: Path, passphrase: bytes | None = None) -> bytes:
    """Create the private key file (refusing to overwrite one) and return the public key PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    private_key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return public_key_pem(key)


def load_private_key(private_key_file: Path, passphrase: bytes | None = None) -> rsa.RSAPrivateKey:
    """Read the private key; ValueError when it is not an RSA-2048 key or the passphrase is wrong."""
    key = serialization.load_pem_private_key(Path(private_key_file).read_bytes(), password=passphrase)
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != KEY_BITS:
        raise ValueError(f"{private_key_file} is not an RSA-{KEY_BITS} private key")
    return key


def passphrase_from_env(env: dict[str, str] | os._Environ = os.environ) -> bytes | None:
    value = env.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def public_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def upload_public_key(
    session: requests.Session,
    base_url: str,
    api_key: str,
    sender: str,
    public_pem: bytes,
    *,
    timeout_s: float = 30.0,
) -> None:
    """Upload the public key for ``sender``; raises ``requests.HTTPError`` when Qliq refuses."""
    response = session.put(
        f"{base_url.rstrip('/')}/secure_messages/set_sender_pubkey",
        params={"sender": sender},
        data={"api_key": api_key, "sender": sender},
        files={"file": ("courier_reply_key.pem", public_pem, "application/x-pem-file")},
        timeout=timeout_s,
        allow_redirects=False,  # a 307/308 would send the API key again, elsewhere
    )
    if response.is_redirect:
        raise requests.HTTPError(f"HTTP {response.status_code}: redirect not followed", response=response)
    response.raise_for_status()
