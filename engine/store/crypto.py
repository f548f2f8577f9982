"""Encryption at rest for PHI columns: AES-256-GCM with a header that names the key.

Each value is ``version (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext+tag``.
The header is authenticated as associated data. The key id lets a rotation keep old keys for
reading while a new key writes: the current key comes from ``$COURIER_STORE_KEY`` or the key
file, old ones from ``$COURIER_STORE_OLD_KEYS`` or the file beside it named ``<key file>.old``
(one base64 key a line), until ``courier store rekey`` has re-encrypted what they wrote.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.errors import StoreError

KEY_ENV = "COURIER_STORE_KEY"
OLD_KEYS_ENV = "COURIER_STORE_OLD_KEYS"
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

    @property
    def key_id(self) -> bytes:
        """The id of the key that encrypts (bytes 1–4 of every value it writes)."""
        return self._header[1:]

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


def keyed_digest(secret: bytes, data: bytes) -> bytes:
    """HMAC-SHA256: a digest of something kept in clear that nobody without ``secret`` can
    reproduce, so it cannot be reversed by hashing candidates (a patient id, a message)."""
    return hmac.new(secret, data, hashlib.sha256).digest()


def load_cipher(env: Mapping[str, str] = os.environ, key_file: Path = DEFAULT_KEY_FILE) -> Cipher:
    """The store's cipher: the current key (created on first run) and any old keys."""
    return Cipher(load_or_create_key(env, key_file), load_old_keys(env, key_file))


def load_old_keys(env: Mapping[str, str] = os.environ, key_file: Path = DEFAULT_KEY_FILE) -> list[bytes]:
    """Keys kept for reading after a rotation: ``$COURIER_STORE_OLD_KEYS`` (base64, separated
    by commas or spaces), else ``<key file>.old`` if there is one."""
    if env.get(OLD_KEYS_ENV):
        return [_decode_key(text, OLD_KEYS_ENV) for text in env[OLD_KEYS_ENV].replace(",", " ").split()]
    old_file = old_keys_file(key_file)
    if not old_file.exists():
        return []
    return [_decode_key(line, str(old_file)) for line in _read_private(old_file).splitlines() if line.strip()]


def old_keys_file(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".old")


def rotate_key_file(key_file: Path) -> bytes:
    """A new current key in ``key_file``; the one it held is appended to ``<key file>.old``.

    The old key is safe on disk (fsynced) before the key file is replaced, and the key file
    is replaced atomically, so a crash at any point leaves every value readable.
    """
    try:
        current = _decode_key(_read_private(key_file), str(key_file))
    except FileNotFoundError:
        raise StoreError(f"no key file {key_file} to rotate") from None
    old_file = old_keys_file(key_file)
    fd = os.open(old_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as f:
        _refuse_shared(os.fstat(f.fileno()).st_mode, old_file)
        f.write(base64.b64encode(current) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    new = os.urandom(KEY_BYTES)
    staged = key_file.with_name(key_file.name + ".new")
    staged.unlink(missing_ok=True)  # a leftover of a crashed rotation, whatever its mode
    _write_key(staged, new).replace(key_file)
    _fsync_directory(key_file.parent)
    return new


def load_or_create_key(env: Mapping[str, str] = os.environ, key_file: Path = DEFAULT_KEY_FILE) -> bytes:
    """The store key: from ``$COURIER_STORE_KEY`` (base64), else ``key_file``, created on first run.

    A key file that the group or others may access is refused, not silently fixed: it may
    already have been copied.
    """
    if env.get(KEY_ENV):
        return _decode_key(env[KEY_ENV], KEY_ENV)
    try:
        return _decode_key(_read_private(key_file), str(key_file))
    except FileNotFoundError:
        return _create_key_file(key_file)


def _read_private(path: Path) -> str:
    """A key file's text; refused when the group or others may access it."""
    with open(path, "rb") as f:
        _refuse_shared(os.fstat(f.fileno()).st_mode, path)
        return f.read().decode("ascii", "replace")


def _refuse_shared(mode: int, path: Path) -> None:
    """Not silently fixed: a key file others could read may already have been copied."""
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StoreError(f"key file {path} has mode {stat.S_IMODE(mode):04o}; run: chmod 600 {path}")


def _create_key_file(key_file: Path) -> bytes:
    key = os.urandom(KEY_BYTES)
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        _write_key(key_file, key)
    except FileExistsError:  # another process created it first: use theirs
        return load_or_create_key({}, key_file)
    return key


def _write_key(path: Path, key: bytes) -> Path:
    """A new key file, created 0600 (never an existing file, whose mode could be anything)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(base64.b64encode(key) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise StoreError(f"store key from {source} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise StoreError(f"store key from {source} must be {KEY_BYTES} bytes, got {len(key)}")
    return key
