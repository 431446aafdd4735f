"""Quoting for each output language, in one place. Values the spec already narrowed still pass
through these, so a future looser field cannot open an injection."""

from __future__ import annotations

import re
import shlex


class UnsafeValue(ValueError):
    """A value that cannot be represented safely in the target language."""


_NGINX_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f$]")


def nginx_str(value: object) -> str:
    """A double-quoted nginx string. Control characters and `$` (variable expansion) are refused."""
    text = str(value)
    if _NGINX_FORBIDDEN.search(text):
        raise UnsafeValue(f"cannot place {text!r} in an nginx config")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ini_value(value: object) -> str:
    """A value on one line of an INI file (supervisor, grafana): no newlines, `;`, `#` or `%`.

    `%` is refused rather than doubled: supervisor expands some options once, some twice
    (`stdout_logfile`) and substitutes `%(here)s` even inside `%%(here)s`, while grafana does not
    expand `%` at all, so no single escape is right for every option.
    """
    text = str(value)
    if re.search(r"[\x00-\x1f\x7f;#%]", text):
        raise UnsafeValue(f"cannot place {text!r} in an INI file")
    return text


def shell_quote(value: object) -> str:
    text = str(value)
    if re.search(r"[\x00-\x1f\x7f]", text):
        raise UnsafeValue(f"cannot place {text!r} in a command line")
    return shlex.quote(text)


# keepalived splits lines on whitespace, starts comments at `#` / `!`, and has no escape sequence.
_KEEPALIVED_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f\"'#!{}\\]")


def keepalived_word(value: object) -> str:
    """One bare keepalived token (a name, an address, a password): refused if it could split,
    comment out or quote the rest of the line."""
    text = str(value)
    if not text or _KEEPALIVED_FORBIDDEN.search(text):
        raise UnsafeValue(f"cannot place {text!r} as one keepalived word")
    return text


def keepalived_command(words: list[object]) -> str:
    """A double-quoted keepalived script line. keepalived splits it into argv itself (no shell),
    so each word must be a keepalived word on its own."""
    return '"' + " ".join(keepalived_word(w) for w in words) + '"'


def logstash_str(value: object) -> str:
    """A Logstash config string, read with the default `config.support_escapes: false`.

    Without escapes a string cannot hold its own quote character, so the text is wrapped in
    whichever quote it does not contain; a trailing backslash (it would swallow the closing
    quote), control characters, or both quote kinds are refused.
    """
    text = str(value)
    if re.search(r"[\x00-\x1f\x7f]", text) or text.endswith("\\"):
        raise UnsafeValue(f"cannot place {text!r} in a Logstash config")
    for quote in ('"', "'"):
        if quote not in text:
            return quote + text + quote
    raise UnsafeValue(f"cannot place {text!r} in a Logstash config: it holds both quote kinds")
