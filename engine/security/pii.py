"""PII masking for what the engine stores and logs: emails, Chinese resident IDs, card numbers, IPs,
phone numbers; and how a user id that is itself PII appears in log lines.

A kind is a pattern plus, for the kinds that have one, a check that the match really is one (the
MOD 11-2 check digit and birth date of a resident ID, Luhn for cards, a digit count for phones), so
an order number that merely looks like an ID stays readable. Digits and word boundaries are ASCII
(re.ASCII): Chinese text runs words together without spaces, and a Unicode `\\b` would not see the
edge between `号` and the ID that follows it.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

PSEUDONYM_KEY_FILE = "pii-pseudonym.key"
_USERS_CACHED = 10_000  # users whose log form is remembered; the cache starts over when full
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _is_resident_id(value: str) -> bool:
    """GB 11643: 17 digits, then the ISO 7064 MOD 11-2 check character; digits 7-14 a birth date."""
    total = sum(int(digit) * weight for digit, weight in zip(value, _ID_WEIGHTS, strict=False))
    if "10X98765432"[total % 11] != value[17].upper():
        return False
    try:
        born = datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return born.year >= 1900 and born <= datetime.date.today()


def _is_card(value: str) -> bool:
    """The Luhn check every payment card number passes (and ~90% of random digit runs fail)."""
    total = 0
    for position, char in enumerate(reversed([c for c in value if c.isdigit()])):
        digit = int(char) * (2 if position % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


def _is_phone(value: str) -> bool:
    return 7 <= sum(c.isdigit() for c in value) <= 15


_KINDS: dict[str, tuple[re.Pattern[str], Callable[[str], bool] | None]] = {
    "email": (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), None),
    "cn_resident_id": (re.compile(r"\b\d{17}[\dXx]\b", re.ASCII), _is_resident_id),
    # 13-19 digits with optional single spaces or dashes between them; never after a `+` (that is
    # an international phone number, and 1 in 10 of those passes Luhn).
    "credit_card": (re.compile(r"(?<!\+)\b\d(?:[ -]?\d){12,18}\b", re.ASCII), _is_card),
    "ip_address": (
        re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b", re.ASCII),
        None,
    ),
    # International or local numbers: optional +, 7-15 digits with spaces, dots, dashes or parens.
    "phone": (re.compile(r"(?<![\w.])\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?![\w.])", re.ASCII), _is_phone),
}
# IDs before cards and phones (18 digits look like both), cards before phones (a card number also
# looks like a long phone number), IPs before phones.
_ORDER = ("email", "cn_resident_id", "credit_card", "ip_address", "phone")

Namer = Callable[[str, str], str]  # (kind, the matched text) -> what replaces it


class Masker:
    """Masks the configured kinds; with no kinds it is falsy and changes nothing.

    Safe to share between threads (the history writer masks on its own thread): the only state is
    the cache of `user`, whose dict operations are atomic.
    """

    def __init__(self, kinds: list[str], pseudonym_key: bytes | None = None) -> None:
        self.patterns = [(kind, *_KINDS[kind]) for kind in _ORDER if kind in kinds]
        self._labels = [(pattern, _labeller(kind, check)) for kind, pattern, check in self.patterns]
        self._key = pseudonym_key
        self._users: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def mask(self, text: str) -> str:
        """`text` with each PII value replaced by its kind's label, e.g. `[email]`."""
        for pattern, label in self._labels:
            text = pattern.sub(label, text)
        return text

    def replace(self, text: str, name: Namer) -> str:
        """`text` with each PII value replaced by `name(kind, value)` (reversible placeholders)."""
        for kind, pattern, check in self.patterns:
            text = pattern.sub(_namer(kind, check, name), text)
        return text

    def user(self, user: str) -> str:
        """How `user` appears in log lines: unchanged unless it contains PII (a WhatsApp phone
        number, an email as a JWT subject...), then `u:` and the first 12 hex digits of
        HMAC-SHA256(pseudonym key, user).

        A keyed pseudonym rather than the masked text (`whatsapp:[phone]`), so an operator can still
        follow one user across access, model, app and audit lines, and nobody without the key can
        test a guessed phone number against the logs. Without a key, the masked text. Cached: the
        log hot path pays one dict lookup per line.
        """
        shown = self._users.get(user)
        if shown is None:
            shown = self._user(user)
            if len(self._users) >= _USERS_CACHED:
                self._users.clear()
            self._users[user] = shown
        return shown

    def _user(self, user: str) -> str:
        user = str(user)  # a log field may be anything; a failing line would be dropped
        masked = self.mask(user)
        if masked == user or self._key is None:
            return masked
        return "u:" + hmac.new(self._key, user.encode(), hashlib.sha256).hexdigest()[:12]


def _labeller(kind: str, check: Callable[[str], bool] | None) -> str | Callable[[re.Match[str]], str]:
    label = f"[{kind}]"
    if check is None:
        return label  # a plain string: re.sub's fast path
    return lambda match: label if check(match.group()) else match.group()


def _namer(kind: str, check: Callable[[str], bool] | None, name: Namer) -> Callable[[re.Match[str]], str]:
    def replacement(match: re.Match[str]) -> str:
        value = match.group()
        return name(kind, value) if check is None or check(value) else value

    return replacement


def pseudonym_key(data_dir: str) -> bytes:
    """The deployment's key for user pseudonyms: `<data_dir>/pii-pseudonym.key`, 32 random bytes
    made on first use (mode 0600) and kept, so pseudonyms stay the same across restarts.

    Workers starting together race to make it; each writes its own temporary file and links it into
    place, the link is atomic and fails for all but the first, so every worker reads the same key.
    Nodes with their own data_dir get their own key (and their own pseudonyms).
    """
    path = Path(data_dir) / PSEUDONYM_KEY_FILE
    with suppress(FileNotFoundError):
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{PSEUDONYM_KEY_FILE}.{os.getpid()}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another worker made it first: use theirs
    finally:
        tmp.unlink()
    return path.read_bytes()
