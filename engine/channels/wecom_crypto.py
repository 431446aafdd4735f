"""WeCom (企业微信) callback cryptography, from the platform's documented scheme.

- msg_signature = hex SHA-1 of the concatenation of [token, timestamp, nonce, encrypted], sorted
  as strings;
- AES key = base64decode(EncodingAESKey + "=") (43 characters -> 32 bytes); AES-256-CBC with the
  key's first 16 bytes as IV; PKCS#7 padding to a multiple of 32 bytes;
- plaintext = 16 random bytes + 4-byte big-endian length of msg + msg + receiveid (the corp id),
  and the ciphertext travels base64-encoded.

Everything here is pure computation on small inputs (a few kilobytes), cheap enough for the loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32  # WeCom pads to 32 bytes, not to AES's 16-byte block
_RANDOM = 16


class CryptoError(ValueError):
    """The ciphertext does not decrypt to a well-formed message for this receiver."""


def aes_key(encoding_aes_key: str) -> bytes:
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("EncodingAESKey is not base64") from None
    if len(key) != 32:
        raise CryptoError("EncodingAESKey must decode to 32 bytes (43 characters)")
    return key


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()


def encrypt(key: bytes, message: str, receive_id: str, random: bytes | None = None) -> str:
    """`message` sealed for WeCom: base64 of AES-256-CBC(random + length + message + receive_id)."""
    body = message.encode()
    plain = (random or os.urandom(_RANDOM)) + struct.pack(">I", len(body)) + body + receive_id.encode()
    pad = BLOCK - len(plain) % BLOCK
    plain += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")


def decrypt(key: bytes, encrypted: str, receive_id: str) -> str:
    """The message inside `encrypted`; raises CryptoError unless it is well formed and addressed
    to `receive_id`."""
    try:
        sealed = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("ciphertext is not base64") from None
    if not sealed or len(sealed) % 16:
        raise CryptoError("ciphertext is not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(sealed) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise CryptoError("bad padding")
    plain = plain[:-pad]
    if len(plain) < _RANDOM + 4:
        raise CryptoError("plaintext too short")
    (length,) = struct.unpack(">I", plain[_RANDOM : _RANDOM + 4])
    start = _RANDOM + 4
    if start + length > len(plain):
        raise CryptoError("message length runs past the plaintext")
    if plain[start + length :] != receive_id.encode():
        raise CryptoError("message is addressed to another receiver")
    try:
        return plain[start : start + length].decode()
    except UnicodeDecodeError:
        raise CryptoError("message is not UTF-8") from None
