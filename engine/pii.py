"""PII masking for what the engine stores and logs (emails, phone numbers, card numbers, IPs)."""

from __future__ import annotations

import re
from collections.abc import Callable

_PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    # 13-19 digits with optional single spaces or dashes between them.
    "credit_card": re.compile(r"\b\d(?:[ -]?\d){12,18}\b"),
    "ip_address": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    # International or local numbers: optional +, 7-15 digits with spaces, dots, dashes or parens.
    "phone": re.compile(r"(?<![\w.])\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?![\w.])"),
}
# Cards before phones (a card number also looks like a long phone number), IPs before phones.
_ORDER = ("email", "credit_card", "ip_address", "phone")


class Masker:
    def __init__(self, kinds: list[str]) -> None:
        self.patterns = [(kind, _PATTERNS[kind]) for kind in _ORDER if kind in kinds]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def mask(self, text: str) -> str:
        for kind, pattern in self.patterns:
            text = pattern.sub(_replacer(kind), text)
        return text


def _replacer(kind: str) -> str | Callable[[re.Match[str]], str]:
    label = f"[{kind}]"
    if kind != "phone":
        return label

    def phone(match: re.Match[str]) -> str:
        digits = sum(c.isdigit() for c in match.group())
        return label if 7 <= digits <= 15 else match.group()

    return phone
