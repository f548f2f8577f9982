"""Encryption at rest: AES-256-GCM values and the store key file."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from engine.errors import StoreError
from engine.store.crypto import (
    KEY_ENV,
    OLD_KEYS_ENV,
    Cipher,
    key_id,
    load_cipher,
    load_or_create_key,
    rotate_key_file,
)


def test_round_trip_uses_a_fresh_nonce_each_time():
    cipher = Cipher(os.urandom(32))
    a, b = cipher.encrypt(b"PID|1||12345"), cipher.encrypt(b"PID|1||12345")
    assert a != b
    assert b"12345" not in a
    assert cipher.decrypt(a) == cipher.decrypt(b) == b"PID|1||12345"


def test_wrong_key_is_refused_loudly():
    value = Cipher(os.urandom(32)).encrypt(b"secret")
    with pytest.raises(StoreError, match="key id"):
        Cipher(os.urandom(32)).decrypt(value)


def test_tampered_value_fails_authentication():
    cipher = Cipher(os.urandom(32))
    value = bytearray(cipher.encrypt(b"secret"))
    value[-1] ^= 1
    with pytest.raises(StoreError, match="authentication"):
        cipher.decrypt(bytes(value))


def test_old_key_still_decrypts_after_rotation():
    old, new = os.urandom(32), os.urandom(32)
    value = Cipher(old).encrypt(b"token")
    rotated = Cipher(new, old_keys=[old])
    assert rotated.decrypt(value) == b"token"
    assert Cipher(new).decrypt(rotated.encrypt(b"x")) == b"x"


def test_key_must_be_32_bytes():
    with pytest.raises(StoreError, match="32 bytes"):
        Cipher(os.urandom(16))


def test_key_file_is_created_0600_with_its_directory(tmp_path):
    key_file = tmp_path / "var" / "store.key"
    key = load_or_create_key(env={}, key_file=key_file)
    assert len(key) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert base64.b64decode(key_file.read_bytes()) == key
    assert load_or_create_key(env={}, key_file=key_file) == key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    key_file = tmp_path / "store.key"
    key_file.write_bytes(base64.b64encode(os.urandom(32)))
    key_file.chmod(mode)
    with pytest.raises(StoreError, match="chmod 600"):
        load_or_create_key(env={}, key_file=key_file)


def test_env_key_wins_over_the_key_file(tmp_path):
    key = os.urandom(32)
    key_file = tmp_path / "store.key"
    assert load_or_create_key({KEY_ENV: base64.b64encode(key).decode()}, key_file) == key
    assert not key_file.exists()


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
def test_bad_env_key_is_refused_without_echoing_it(tmp_path, value):
    with pytest.raises(StoreError) as excinfo:
        load_or_create_key({KEY_ENV: value}, tmp_path / "store.key")
    assert value not in str(excinfo.value)


def test_old_keys_come_from_the_environment_or_the_file_beside_the_key_file(tmp_path):
    key_file = tmp_path / "store.key"
    old = [os.urandom(32), os.urandom(32)]
    encoded = [base64.b64encode(k).decode() for k in old]
    value = Cipher(old[1]).encrypt(b"written before the rotation")

    from_env = load_cipher(
        {KEY_ENV: base64.b64encode(os.urandom(32)).decode(), OLD_KEYS_ENV: ",".join(encoded)}
    )
    assert from_env.decrypt(value) == b"written before the rotation"

    old_file = tmp_path / "store.key.old"
    old_file.write_text("\n".join(encoded) + "\n")
    old_file.chmod(0o600)
    assert load_cipher({}, key_file).decrypt(value) == b"written before the rotation"
    old_file.chmod(0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        load_cipher({}, key_file)


def test_rotating_the_key_file_keeps_the_old_key_for_reading(tmp_path):
    key_file = tmp_path / "store.key"
    with pytest.raises(StoreError, match="no key file"):
        rotate_key_file(key_file)
    before = load_or_create_key({}, key_file)
    value = Cipher(before).encrypt(b"PHI")

    after = rotate_key_file(key_file)

    assert after != before and load_or_create_key({}, key_file) == after
    for path in (key_file, tmp_path / "store.key.old"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "store.key.new").exists()
    cipher = load_cipher({}, key_file)
    assert cipher.key_id == key_id(after)
    assert cipher.decrypt(value) == b"PHI"
    rotate_key_file(key_file)
    assert load_cipher({}, key_file).decrypt(value) == b"PHI", "every old key is kept, not just the last"
