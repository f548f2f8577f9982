"""Encryption at rest for PHI columns: AES-256-GCM with a header that names the key.

Each value is ``version (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext+tag``.
The header is authenticated as associated data. The key id lets a later rotation keep old
keys for reading while a new key writes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.errors import StoreError

KEY_ENV = "COURIER_STORE_KEY"
DEFAULT_KEY_FILE = Path("var/store.key")
KEY_BYTES = 32

_FORMAT = 1
_NONCE_BYTES = 12
_HEADER_BYTES = 1 + 4


def key_id(key: bytes) -> bytes:
    """A short public fingerprint of a key, stored with each value it encrypts."""
    return hashlib.sha256(b"courier-store-key-id" + key).digest()[:4]


class Cipher:
    """Encrypts with ``key``; decrypts with ``key`` or any of ``old_keys``."""

    def __init__(self, key: bytes, old_keys: Iterable[bytes] = ()) -> None:
        for k in (key, *old_keys):
            if len(k) != KEY_BYTES:
                raise StoreError(f"store key must be {KEY_BYTES} bytes, got {len(k)}")
        self._header = bytes([_FORMAT]) + key_id(key)
        self._encrypting = AESGCM(key)
        self._decrypting = {key_id(k): AESGCM(k) for k in (*old_keys, key)}

    def encrypt(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return self._header + nonce + self._encrypting.encrypt(nonce, plaintext, self._header)

    def decrypt(self, value: bytes) -> bytes:
        header, nonce = value[:_HEADER_BYTES], value[_HEADER_BYTES : _HEADER_BYTES + _NONCE_BYTES]
        if header[:1] != bytes([_FORMAT]):
            raise StoreError(f"unknown encrypted value format {header[:1].hex()}")
        aead = self._decrypting.get(header[1:])
        if aead is None:
            raise StoreError(f"value was encrypted with key id {header[1:].hex()}, not loaded")
        try:
            return aead.decrypt(nonce, value[_HEADER_BYTES + _NONCE_BYTES :], header)
        except InvalidTag:
            raise StoreError("encrypted value failed authentication (corrupt or tampered)") from None


def load_or_create_key(env: Mapping[str, str] = os.environ, key_file: Path = DEFAULT_KEY_FILE) -> bytes:
    """The store key: from ``$COURIER_STORE_KEY`` (base64), else ``key_file``, created on first run.

    A key file that the group or others may access is refused, not silently fixed: it may
    already have been copied.
    """
    if env.get(KEY_ENV):
        return _decode_key(env[KEY_ENV], KEY_ENV)
    try:
        fd = os.open(key_file, os.O_RDONLY)
    except FileNotFoundError:
        return _create_key_file(key_file)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StoreError(
                f"key file {key_file} has mode {stat.S_IMODE(mode):04o}; run: chmod 600 {key_file}"
            )
        return _decode_key(f.read().decode("ascii", "replace"), str(key_file))


def _create_key_file(key_file: Path) -> bytes:
    key = os.urandom(KEY_BYTES)
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return load_or_create_key({}, key_file)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64encode(key) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return key


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise StoreError(f"store key from {source} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise StoreError(f"store key from {source} must be {KEY_BYTES} bytes, got {len(key)}")
    return key
