"""The fast JSON paths mean exactly what the standard library means, except for the two things the
engine refuses on purpose: nesting past MAX_DEPTH and text with a lone surrogate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistantctl.engine import jsonio
from assistantctl.engine.api.bodies import chat_request, completion_request, json_object
from assistantctl.engine.errors import ApiError

# Inputs where orjson alone would differ from `json`: it rejects some, turns others into floats.
EDGE_BODIES = [
    b'{"max_tokens": 123456789012345678901234567890}',
    b'{"priority": 18446744073709551615, "n": -9223372036854775808}',
    b'{"temperature": 1e400}',
    b'{"temperature": NaN, "x": -Infinity}',
    b'{"message": "\\ud83d\\ude00 a pair of surrogates is one character"}',
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


LONE_SURROGATES = [
    b'{"message": "\\ud800"}',
    b'{"message": "ok", "x": ["\\udfff"]}',
    b'{"\\ud83d": "a lone half as a key"}',
    b'{"n": 123456789012345678901234, "message": "\\udc00"}',  # down the standard library's path
    b'{"message": "raw \xed\xa0\x80 bytes of a surrogate"}',
    '{"message": "utf-16 \ud800"}'.encode("utf-16", "surrogatepass"),
]


@pytest.mark.parametrize("raw", LONE_SURROGATES)
def test_loads_refuses_text_with_a_lone_surrogate(raw: bytes) -> None:
    with pytest.raises(jsonio.RefusedJson, match="surrogate") as refused:
        jsonio.loads(raw)
    assert refused.value.code == "invalid_text"


def nested(depth: int, number: bytes = b"1") -> bytes:
    return b"[" * depth + number + b"]" * depth


@pytest.mark.parametrize(
    "raw",
    [
        nested(jsonio.MAX_DEPTH + 1),
        nested(100_000),  # json.loads raised RecursionError
        nested(100_000, b"12345678901234567890"),  # a long number: straight to the standard library
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 100_000,  # never closed
        b'{"message": "[[[[", "x": ' + nested(jsonio.MAX_DEPTH) + b"}",
    ],
    ids=["limit+1", "100k", "100k-long-number", "100k-objects", "unclosed", "object-around-limit"],
)
def test_loads_refuses_nesting_past_the_limit_without_recursing(raw: bytes) -> None:
    with pytest.raises(jsonio.RefusedJson, match="nested too deep") as refused:
        jsonio.loads(raw)
    assert refused.value.code == "too_deep"


def test_brackets_inside_strings_are_text_not_nesting() -> None:
    text = "[{" * 1000 + '\\" ]]'
    assert jsonio.loads(json.dumps({"message": text}).encode()) == {"message": text}
    assert jsonio.loads(nested(jsonio.MAX_DEPTH)) == json.loads(nested(jsonio.MAX_DEPTH))


# Any JSON value at all: the parsers either accept it or answer a 4xx ApiError, never anything else.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
body_fields = st.fixed_dictionaries(
    {},
    optional={
        "message": json_values,
        "messages": st.lists(st.dictionaries(st.sampled_from(["role", "content", "type", "text"]), json_values)),
        "user": json_values,
        "conversation_id": json_values,
        "priority": json_values,
        "model": json_values,
        "max_tokens": json_values,
        "temperature": json_values,
        "stream_options": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()))
def test_json_object_gives_an_object_or_a_400_for_any_bytes(raw: bytes) -> None:
    try:
        value = json_object(raw)
    except ApiError as exc:
        assert exc.status == 400
    else:
        assert isinstance(value, dict)


@settings(max_examples=300, deadline=None)
@given(data=body_fields)
def test_body_parsers_accept_or_answer_a_4xx_for_any_object(data: dict[str, Any]) -> None:
    for parse in (chat_request, completion_request):
        try:
            parse(data, 100)
        except ApiError as exc:
            assert 400 <= exc.status < 500


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_loads_reads_back_what_json_writes(value: Any) -> None:
    raw = json.dumps(value).encode()
    assert json.dumps(jsonio.loads(raw)) == json.dumps(json.loads(raw))
