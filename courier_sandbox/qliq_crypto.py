"""How Qliq encrypts a reply for the webhook, and its attachment.

The reply JSON is RSA-encrypted with the sender's uploaded public key, PKCS#1 v1.5, in
chunks: each plaintext chunk is at most ``key size - 11`` bytes (245 for RSA-2048) so that
each ciphertext block is exactly one key size (256 bytes), which is what the documented
decryption (Base64-decode, split in 256-byte chunks, decrypt each, join) expects.

Attachments: the document says only "AES 256" (``encryptionMethod: 1``) and carries just a
``key``, no IV, nonce or tag field. The sandbox uses **AES-256-CBC with PKCS#7 padding and a
random 16-byte IV prepended to the file**: with only a key in the message the IV has to
travel with the file, and CBC + IV prefix is the common OpenSSL-era layout a 2016 client
(like Qliq's C# sample, built on OpenSSL) decrypts. GCM would need a tag the JSON cannot
carry. The key is sent Base64-encoded (32 raw bytes).
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PKCS1_OVERHEAD = 11


def rsa_encrypt_chunked(public_key: RSAPublicKey, plaintext: bytes) -> str:
    """Base64 of the concatenated PKCS#1 v1.5 blocks of ``plaintext``."""
    block = public_key.key_size // 8
    step = block - PKCS1_OVERHEAD
    chunks = [plaintext[i : i + step] for i in range(0, len(plaintext), step)] or [b""]
    ciphertext = b"".join(public_key.encrypt(chunk, asymmetric_padding.PKCS1v15()) for chunk in chunks)
    return base64.b64encode(ciphertext).decode("ascii")


def aes_encrypt_file(data: bytes) -> tuple[bytes, str]:
    """Encrypt ``data`` with a fresh AES-256 key; returns (IV + ciphertext, Base64 key)."""
    key, iv = os.urandom(32), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(padded) + encryptor.finalize(), base64.b64encode(key).decode()
