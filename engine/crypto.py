"""Encryption at rest for stored message text (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken


class Sealer:
    """Seals text for storage. Without a key it is the identity, so callers never branch."""

    def __init__(self, key: str | None) -> None:
        self.fernet = Fernet(_fernet_key(key)) if key else None

    def seal(self, text: str) -> str:
        return self.fernet.encrypt(text.encode()).decode("ascii") if self.fernet else text

    def open(self, stored: str) -> str:
        if not self.fernet:
            return stored
        try:
            return self.fernet.decrypt(stored.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            return "[unreadable: encrypted with another key]"


def _fernet_key(secret: str) -> bytes:
    """A Fernet key as-is, or any other secret stretched to one (SHA-256, url-safe base64)."""
    try:
        if len(base64.urlsafe_b64decode(secret.encode())) == 32:
            return secret.encode()
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())
