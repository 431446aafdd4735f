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
    """A value on one line of a supervisor (INI) file: no newlines, no `%` interpolation, no `;`."""
    text = str(value)
    if re.search(r"[\x00-\x1f\x7f;#]", text):
        raise UnsafeValue(f"cannot place {text!r} in an INI file")
    return text.replace("%", "%%")


def shell_quote(value: object) -> str:
    text = str(value)
    if re.search(r"[\x00-\x1f\x7f]", text):
        raise UnsafeValue(f"cannot place {text!r} in a command line")
    return shlex.quote(text)
