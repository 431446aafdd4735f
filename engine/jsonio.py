"""JSON in and out on the request path: orjson where it means what the standard library means.

orjson encodes and decodes about ten times faster than `json`, which showed in every request
(decoding the body, encoding the answer). Where the two could disagree the standard library
decides, so nothing a client sends or gets changes:
- decoding: orjson rejects NaN/Infinity, lone surrogates, other encodings than UTF-8 and numbers
  out of double range, all of which `json` accepts; and it turns an integer beyond 64 bits into a
  float, so a body with a run of 20 digits (where such an integer has to be) goes to `json`;
- encoding: integers beyond 64 bits and non-string keys make orjson raise; `json` encodes them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSONResponse

# An integer orjson would turn into a float has at least 20 digits (2**64 has 20).
_LONG_NUMBER = re.compile(rb"\d{20}")


def loads(raw: bytes | bytearray) -> Any:
    """`json.loads(raw)`: the same value, or the same ValueError / UnicodeDecodeError."""
    if not _LONG_NUMBER.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # maybe valid for `json` (NaN, UTF-16, a lone surrogate...): let it decide
    return json.loads(raw)


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON, as `json.dumps(data, ensure_ascii=False, separators=(",", ":"))`."""
    try:
        return orjson.dumps(data)
    except TypeError:  # an integer beyond 64 bits, say: the standard library still encodes it
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class JSONResponse(_StarletteJSONResponse):
    """Starlette's JSONResponse (same headers, same compact UTF-8 body), encoded by orjson."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:
            return super().render(content)
