"""The fast JSON paths mean exactly what the standard library means."""

from __future__ import annotations

import json

import pytest

from assistantctl.engine import jsonio

# Inputs where orjson alone would differ from `json`: it rejects some, turns others into floats.
EDGE_BODIES = [
    b'{"max_tokens": 123456789012345678901234567890}',
    b'{"priority": 18446744073709551615, "n": -9223372036854775808}',
    b'{"temperature": 1e400}',
    b'{"temperature": NaN, "x": -Infinity}',
    b'{"message": "\\ud800"}',
    b'\xef\xbb\xbf{"message": "with a BOM"}',
    '{"message": "utf-16"}'.encode("utf-16"),
    b'{"a": 1, "a": 2, "f": [0.1, 1e-05, 1e16, 2.5e-7]}',
    b'{"message": "hello", "user": "bench"}',
]


@pytest.mark.parametrize("raw", EDGE_BODIES)
def test_loads_gives_what_json_gives(raw: bytes) -> None:
    expected, got = json.loads(raw), jsonio.loads(raw)
    assert json.dumps(got) == json.dumps(expected)
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a": 1,}', b"\xff\xfe\xfa", b"[1, 2"])
def test_loads_rejects_what_json_rejects(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        jsonio.loads(raw)


def test_dumps_and_responses_encode_like_json_also_beyond_orjson() -> None:
    for data in ({"reply": "é \u2028 <>&", "usage": {"n": 3}}, {"big": 2**70}, {1: "int key"}):
        expected = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        assert jsonio.dumps(data) == expected
        assert jsonio.JSONResponse(data).body == expected
