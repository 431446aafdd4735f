"""Encryption at rest for stored message text: a keyring of Fernet keys (AES-128-CBC + HMAC-SHA256).

Each stored record carries the id of the key that sealed it (a column beside the text):

- a key id of the keyring: sealed with that key;
- `""` (PLAINTEXT): stored while encryption was off;
- None: stored before records carried key ids; a Fernet token sealed with one of the keys, or
  plaintext from before encryption was on.

The first key seals; every key opens. Records under another key than the first are re-sealed in
the background (engine/history/retention.py), so an older key can leave the keyring once none remain.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..settings import SecuritySettings

PLAINTEXT = ""


class Unreadable(Exception):
    """No key of the keyring opens this record."""


class Keyring:
    """Seals text for storage and opens what was stored. Without keys, sealing is the identity,
    so callers never branch. Thread-safe (no state changes after construction)."""

    def __init__(self, keys: Sequence[tuple[str, str]] = ()) -> None:
        """`keys`: (id, secret) pairs, the current key first."""
        self.ids = [key_id for key_id, _ in keys]
        self._by_id = {key_id: Fernet(_fernet_key(secret)) for key_id, secret in keys}
        self._any = MultiFernet(list(self._by_id.values())) if keys else None

    @property
    def current(self) -> str:
        """The id new records are stored under (PLAINTEXT when encryption is off)."""
        return self.ids[0] if self.ids else PLAINTEXT

    def seal(self, text: str) -> tuple[str, str]:
        """(stored text, key id)."""
        if not self.ids:
            return text, PLAINTEXT
        return self._by_id[self.current].encrypt(text.encode()).decode("ascii"), self.current

    def open(self, stored: str, key_id: str | None) -> str:
        """The text of a record; a marker instead of text when no key of the keyring opens it."""
        try:
            return self.plain(stored, key_id)
        except Unreadable:
            return f"[unreadable: sealed with key {key_id or 'unknown'}, which is not in the keyring]"

    def plain(self, stored: str, key_id: str | None) -> str:
        """The text of a record; raises Unreadable."""
        if key_id == PLAINTEXT:
            return stored
        if key_id is None and not _looks_sealed(stored):
            return stored  # from before encryption was on
        if self._any is None:
            if key_id is None:
                return stored  # encryption off, and an old record: as the engine always returned it
            raise Unreadable(key_id)
        fernet = self._by_id.get(key_id or "")
        try:
            # The record's own key when it is in the keyring; else (an id from before a key was
            # renamed, or none at all) whichever key opens it.
            return (fernet or self._any).decrypt(stored.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            if fernet is not None:
                try:
                    return self._any.decrypt(stored.encode("ascii")).decode()
                except (InvalidToken, ValueError):
                    pass
            raise Unreadable(key_id) from None

    def reseal(self, stored: str, key_id: str | None) -> tuple[str, str] | None:
        """(stored text, key id) under the current key, or None when the record needs nothing
        (already current, or encryption is off). Raises Unreadable."""
        if not self.ids or key_id == self.current:
            return None
        return self.seal(self.plain(stored, key_id))


def keyring(security: SecuritySettings, secrets: dict[str, str]) -> Keyring:
    """The keyring the settings describe; raises RuntimeError when a key's secret is missing.

    The one-key form (`history_key_secret`) is a keyring of one key whose id is derived from the
    key itself, so that replacing the key changes the id and the old records show as such."""
    named = [(key.id, key.secret) for key in security.history_keys]
    if security.history_key_secret:
        named = [("", security.history_key_secret)]
    keys = []
    for key_id, name in named:
        value = secrets.get(name)
        if not value:
            raise RuntimeError(f"history encryption is on but secret {name!r} is not in the secrets file")
        keys.append((key_id or fingerprint(value), value))
    return Keyring(keys)


def Sealer(key: str | None) -> Keyring:  # noqa: N802 - the name the one-key form had
    """A keyring of `key` alone (or of none: encryption off)."""
    return Keyring([(fingerprint(key), key)] if key else [])


def fingerprint(secret: str) -> str:
    """A stable id for a key that has none: a hash of the key (it reveals nothing about it)."""
    digest = hashlib.sha256(b"assistantctl history key id\0" + _fernet_key(secret)).hexdigest()
    return f"key-{digest[:12]}"


def _looks_sealed(stored: str) -> bool:
    """A Fernet token: url-safe base64 starting with the version byte 0x80."""
    if not stored.startswith("gAAAAA"):
        return False
    try:
        return len(base64.urlsafe_b64decode(stored.encode("ascii"))) >= 57
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False


def _fernet_key(secret: str) -> bytes:
    """A Fernet key as-is, or any other secret stretched to one (SHA-256, url-safe base64)."""
    try:
        if len(base64.urlsafe_b64decode(secret.encode())) == 32:
            return secret.encode()
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())
