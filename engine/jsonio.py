"""JSON in and out on the request path: orjson where it means what the standard library means.

orjson encodes and decodes about ten times faster than `json`, which showed in every request
(decoding the body, encoding the answer). Where the two could disagree the standard library
decides, so nothing a client sends or gets changes:
- decoding: orjson rejects NaN/Infinity, lone surrogates, other encodings than UTF-8 and numbers
  out of double range, all of which `json` accepts; and it turns an integer beyond 64 bits into a
  float, so a body with a run of 20 digits (where such an integer has to be) goes to `json`;
- encoding: integers beyond 64 bits and non-string keys make orjson raise; `json` encodes them.

Two things `json` takes are refused (`RefusedJson`, a ValueError), because they fail later, far from
the request that brought them: text holding a lone UTF-16 surrogate (`"\\ud800"`: no UTF-8 form, so
storing or sending it raises) and nesting deeper than `MAX_DEPTH` (`json` recurses per level and
raises RecursionError past ~1,000). Depth is counted over the raw text, never by recursion.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSONResponse

MAX_DEPTH = 64  # arrays and objects inside each other, the outermost included

# An integer orjson would turn into a float has at least 20 digits (2**64 has 20).
_LONG_NUMBER = re.compile(rb"\d{20}")
# A JSON string, escapes included (the rule `json` scans strings by): brackets in it are text.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Brackets become +1 / -1 (as signed bytes); everything else is deleted.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_MESSAGE = "text holds an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode text"


class RefusedJson(ValueError):
    """JSON the engine does not take; `code` says why ("too_deep" or "invalid_text") and the
    message is meant for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def loads(raw: bytes | bytearray | str) -> Any:
    """`json.loads(raw)`: the same value, or the same ValueError / UnicodeDecodeError; and
    `RefusedJson` for nesting deeper than MAX_DEPTH or a lone surrogate anywhere (keys too)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not _LONG_NUMBER.search(raw):
        try:
            value = orjson.loads(raw)  # refuses lone surrogates and nesting past 1,024 itself
        except orjson.JSONDecodeError:
            pass  # maybe valid for `json` (NaN, UTF-16, a lone surrogate...): let it decide
        else:
            _check_depth(raw)
            return value
    text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # what json.loads(raw) does first
    _check_depth(text.encode("utf-8", "surrogatepass"))
    value = json.loads(text)
    _check_text(value)
    return value


def _check_depth(raw: bytes | bytearray) -> None:
    """Refuse nesting past MAX_DEPTH, counted without recursion and in C loops: a megabyte of
    brackets takes ~20 ms, less than parsing it."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return  # nearly every body: too few brackets to be too deep
    steps = _STRING.sub(b"", raw).translate(_STEPS, _NOT_BRACKETS)
    if max(accumulate(array("b", steps)), default=0) > MAX_DEPTH:
        raise RefusedJson("too_deep", f"JSON nested too deep: more than {MAX_DEPTH} levels")


def _check_text(value: Any) -> None:
    """Every string of `value`, keys included, is text: no lone surrogate (`json` pairs the halves
    of a character outside the BMP, so a surrogate left in a str is an unpaired one)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, str) and _SURROGATE.search(item):
            raise RefusedJson("invalid_text", _SURROGATE_MESSAGE)


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
