"""PII: the Chinese resident ID kind, the user field of log lines, and masking before the model.

Unit tests cover the masker and the placeholders; engine tests run the real engine on loopback
against an upstream that echoes what it got, so "the model never saw it" is read off the wire.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from assistantctl.engine.logs import JsonFormatter, TextFormatter
from assistantctl.engine.security.pii import Masker, pseudonym_key
from assistantctl.engine.security.pii_placeholders import Placeholders
from assistantctl.engine.settings import EngineSettings, SecuritySettings
from assistantctl.renderers import Target
from assistantctl.renderers.engine import render
from assistantctl.schema.loader import parse_spec
from engine_process import RunningEngine, StartEngine, model, written_lines
from fake_models import free_port, serve_in_thread

JWT_KEY = "test-jwt-signing-key-of-32-bytes!"
ALL_KINDS = ["email", "cn_resident_id", "credit_card", "ip_address", "phone"]
ID_X, ID_DIGIT = "11010519491231002X", "440304199003070018"  # valid MOD 11-2 check digits
WA_USER = "whatsapp:+4915112345678"
PII_TEXT = f"I am li.lei@example.cn, phone +86 138 0013 8000, ID {ID_X}; again li.lei@example.cn"


def token(sub: str, **claims: object) -> dict[str, str]:
    value = jwt.encode({"sub": sub, "exp": int(time.time()) + 60, **claims}, JWT_KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {value}"}


# -- the resident ID kind ---------------------------------------------------------------------------


@pytest.mark.parametrize("resident_id", [ID_X, ID_X.lower(), ID_DIGIT])
def test_resident_ids_with_a_valid_check_digit_are_masked(resident_id: str) -> None:
    masker = Masker(ALL_KINDS)
    assert masker.mask(f"ID: {resident_id}.") == "ID: [cn_resident_id]."
    assert masker.mask(f"身份证号{resident_id}，谢谢") == "身份证号[cn_resident_id]，谢谢"  # no spaces in Chinese


@pytest.mark.parametrize(
    "number",
    [
        "110105194912310021",  # ID_X with a wrong check digit (and no valid card number)
        "440304199003070010",  # ID_DIGIT with a wrong check digit
        "110105194913310021",  # a right check digit but month 13: not a birth date
    ],
)
def test_eighteen_digits_that_fail_the_id_checks_are_not_ids(number: str) -> None:
    masked = Masker(ALL_KINDS).mask(f"order {number} shipped")
    assert "[cn_resident_id]" not in masked
    assert "[credit_card]" not in masked  # they fail Luhn too


def test_card_numbers_need_the_luhn_check() -> None:
    masker = Masker(ALL_KINDS)
    assert masker.mask("card 4111 1111 1111 1111") == "card [credit_card]"
    assert masker.mask("ref 4111 1111 1111 1112") == "ref 4111 1111 1111 1112"
    assert masker.mask("ref 440304199003070019") == "ref [credit_card]"  # Luhn-valid, wrong ID check digit


# -- the user field of log lines ---------------------------------------------------------------------


def _record(**fields: Any) -> logging.LogRecord:
    record = logging.LogRecord("engine.access", logging.INFO, __file__, 1, "", None, None)
    record.fields = fields
    return record


def test_users_that_are_pii_become_a_stable_keyed_pseudonym_in_log_lines() -> None:
    masker = Masker(ALL_KINDS, pseudonym_key=b"k" * 32)
    text = TextFormatter(masker)
    first = text.format(_record(request_id="r1", user=WA_USER, status=200))
    again = text.format(_record(request_id="r2", user=WA_USER, status=200))
    shown = re.search(r" user=(\S+) ", first).group(1)
    assert re.fullmatch(r"u:[0-9a-f]{12}", shown) and f" user={shown} " in again
    data = json.loads(JsonFormatter(masker).format(_record(user=WA_USER)))
    assert data["user"] == shown  # the same user is the same pseudonym in text, JSON and audit lines
    other_key = TextFormatter(Masker(ALL_KINDS, pseudonym_key=b"o" * 32)).format(_record(user=WA_USER))
    assert f"user={shown}" not in other_key  # keyed: not a plain hash anyone can recompute
    assert "user=ann " in text.format(_record(user="ann", status=200))  # not PII: kept readable
    assert "user=- " in text.format(_record(user=None, status=200))


def test_without_a_key_pii_users_are_masked_and_with_masking_off_untouched() -> None:
    assert "user=whatsapp:[phone] " in TextFormatter(Masker(ALL_KINDS)).format(_record(user=WA_USER, status=1))
    assert f"user={WA_USER} " in TextFormatter(Masker([])).format(_record(user=WA_USER, status=1))


def test_the_pseudonym_key_is_made_once_per_data_dir(tmp_path: Path) -> None:
    key = pseudonym_key(str(tmp_path))
    assert len(key) == 32 and pseudonym_key(str(tmp_path)) == key
    assert oct(next(tmp_path.iterdir()).stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_engine_log_lines_never_show_a_pii_user(engine_factory: StartEngine, tmp_path: Path, log_format: str) -> None:
    audit = tmp_path / f"audit-{log_format}.log"
    engine = engine_factory(
        [model("local")],
        name=log_format,
        log_format=log_format,
        security=SecuritySettings(jwt_secret="security.jwt.secret", pii_masking=ALL_KINDS, audit_log=str(audit)),
        secrets={"security.jwt.secret": JWT_KEY},
    )
    with engine.client() as client:
        for _ in range(2):
            assert client.post("/api/v1/chat", json={"message": "hi"}, headers=token(WA_USER)).status_code == 200
        admin = client.put("/admin/v1/default-model", json={"model": "local"}, headers=token(WA_USER, admin=True))
        assert admin.status_code == 200
    lines = engine.log_lines()
    assert not any("4915112345678" in line for line in lines)
    users = set()
    for line in lines:
        if log_format == "json":
            data = json.loads(line)
            if data["logger"] in ("engine.access", "engine.model") and data.get("route") != "/health":
                users.add(data["user"])
        elif " engine.model " in line or (" engine.access " in line and "route=/api/v1/chat" in line):
            users.add(re.search(r" user=(\S+)", line).group(1))
    assert len(users) == 1 and re.fullmatch(r"u:[0-9a-f]{12}", users.pop() or "")
    audited = "\n".join(written_lines(audit, '"set_default_model"'))
    assert "4915112345678" not in audited and json.loads(audited.splitlines()[-1])["user"].startswith("u:")


# -- masking before the model ------------------------------------------------------------------------


class EchoUpstream:
    """An OpenAI-shaped upstream whose reply is the last user message it received, streamed three
    characters at a time (so placeholders arrive split across chunks)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[dict[str, Any]] = []

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.bodies.append(body)
        text = "You said: " + next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            return JSONResponse({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

        async def frames() -> AsyncIterator[bytes]:
            for i in range(0, len(text), 3):
                delta = {"choices": [{"index": 0, "delta": {"content": text[i : i + 3]}, "finish_reason": None}]}
                yield f"data: {json.dumps(delta)}\n\n".encode()
            yield b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'

        return StreamingResponse(frames(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoUpstream]:
    upstream = EchoUpstream()
    server, thread = serve_in_thread(
        [Route("/v1/chat/completions", upstream.completions, methods=["POST"])], upstream.port
    )
    yield upstream
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def masked_engine(engine_factory: StartEngine, echo: EchoUpstream) -> RunningEngine:
    echo.bodies.clear()
    upstream = model("echo", "openai", model="echo-1", api_base=f"http://127.0.0.1:{echo.port}/v1")
    security = SecuritySettings(jwt_secret="security.jwt.secret", pii_masking=ALL_KINDS, pii_before_model=True)
    return engine_factory([upstream], security=security, secrets={"security.jwt.secret": JWT_KEY})


def _assert_upstream_saw_placeholders_only(echo: EchoUpstream) -> None:
    sent = json.dumps(echo.bodies)
    for secret in ("li.lei@example.cn", "138 0013 8000", ID_X):
        assert secret not in sent
    last = echo.bodies[-1]["messages"][-1]["content"]
    assert last == "I am [email_1], phone [phone_1], ID [cn_resident_id_1]; again [email_1]"


def _sse_data(response: httpx.Response) -> list[Any]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]


def test_chat_hides_pii_from_the_model_and_restores_it_in_the_reply(
    masked_engine: RunningEngine, echo: EchoUpstream
) -> None:
    with masked_engine.client() as client:
        answer = client.post("/api/v1/chat", json={"message": PII_TEXT}, headers=token("ann")).json()
        stored = client.get(
            "/api/v1/history", params={"conversation_id": answer["conversation_id"]}, headers=token("ann")
        ).json()["messages"]
    _assert_upstream_saw_placeholders_only(echo)
    assert answer["reply"] == "You said: " + PII_TEXT
    replies = [m["content"] for m in stored if m["role"] == "assistant"]
    assert replies == ["You said: I am [email], phone [phone], ID [cn_resident_id]; again [email]"]


def test_chat_stream_restores_placeholders_split_across_chunks(
    masked_engine: RunningEngine, echo: EchoUpstream
) -> None:
    with masked_engine.client() as client:
        response = client.post("/api/v1/chat/stream", json={"message": PII_TEXT}, headers=token("ann"))
        events = _sse_data(response)
        conversation = events[-1]["conversation_id"]
        stored = client.get("/api/v1/history", params={"conversation_id": conversation}, headers=token("ann")).json()
    _assert_upstream_saw_placeholders_only(echo)
    assert echo.bodies[-1]["stream"] is True
    assert "".join(e.get("delta", "") for e in events) == "You said: " + PII_TEXT
    assert stored["messages"][-1]["content"].endswith("ID [cn_resident_id]; again [email]")


def test_openai_surface_restores_plain_and_streamed_replies(masked_engine: RunningEngine, echo: EchoUpstream) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": PII_TEXT}]}
    with masked_engine.client() as client:
        plain = client.post("/v1/chat/completions", json=body, headers=token("ann")).json()
        _assert_upstream_saw_placeholders_only(echo)
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True}, headers=token("ann"))
        _assert_upstream_saw_placeholders_only(echo)
    assert plain["choices"][0]["message"]["content"] == "You said: " + PII_TEXT
    pieces = [c["choices"][0]["delta"].get("content", "") for c in _sse_data(streamed) if c.get("choices")]
    assert "".join(pieces) == "You said: " + PII_TEXT


def test_the_spec_switch_renders_into_the_settings(tmp_path: Path) -> None:
    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "assistant.yaml").read_text(encoding="utf-8"))
    pii = {"enabled": True, "kinds": ["email", "cn_resident_id"], "before_model": True}
    spec.setdefault("security", {})["pii_masking"] = pii
    parsed = parse_spec(yaml.safe_dump(spec, sort_keys=False))
    target = Target(spec=parsed, host=parsed.deploy.hosts[0], root=str(tmp_path), python=sys.executable)
    security = EngineSettings.model_validate_json(render(target)["settings.json"]).security
    assert (security.pii_masking, security.pii_before_model) == (["email", "cn_resident_id"], True)
    spec["security"]["pii_masking"]["enabled"] = False  # off means off, whatever before_model says
    parsed = parse_spec(yaml.safe_dump(spec, sort_keys=False))
    target = Target(spec=parsed, host=parsed.deploy.hosts[0], root=str(tmp_path), python=sys.executable)
    security = EngineSettings.model_validate_json(render(target)["settings.json"]).security
    assert (security.pii_masking, security.pii_before_model) == ([], False)


# -- placeholders, unit ------------------------------------------------------------------------------


def test_placeholders_are_stable_per_value_and_skip_ones_the_user_typed() -> None:
    placeholders = Placeholders(Masker(ALL_KINDS))
    hidden = placeholders.hide(
        [
            {"role": "user", "content": "write [email_1] literally; mine is a@b.io"},
            {"role": "assistant", "content": "noted a@b.io"},
            {"role": "user", "content": "and c@d.io, 10.0.0.1"},
        ]
    )
    assert [m["content"] for m in hidden] == [
        "write [email_1] literally; mine is [email_2]",
        "noted [email_2]",
        "and [email_3], [ip_address_1]",
    ]
    assert placeholders.restore("[email_3] [email_2] [email_1] [email_9]") == "c@d.io a@b.io [email_1] [email_9]"


def test_the_stream_restorer_holds_back_only_a_bounded_partial_placeholder() -> None:
    placeholders = Placeholders(Masker(ALL_KINDS))
    placeholders.hide([{"role": "user", "content": "a@b.io"}])
    restorer = placeholders.stream_restorer()
    out = [restorer.feed(piece) for piece in ["mail [", "ema", "il_", "1] now", " [not a placeholder"]]
    assert out == ["mail ", "", "", "a@b.io now", " [not a placeholder"]
    assert restorer.feed(" [" + "x" * 100) == " [" + "x" * 100  # never held back without bound
    assert restorer.feed(" [emai") == " " and restorer.flush() == "[emai"


def test_masking_on_but_before_model_off_still_sends_the_real_text(
    engine_factory: StartEngine, echo: EchoUpstream
) -> None:
    echo.bodies.clear()
    upstream = model("echo", "openai", model="echo-1", api_base=f"http://127.0.0.1:{echo.port}/v1")
    engine = engine_factory([upstream], security=SecuritySettings(pii_masking=ALL_KINDS))
    with engine.client() as client:
        assert client.post("/api/v1/chat", json={"message": PII_TEXT}).json()["reply"] == "You said: " + PII_TEXT
    assert echo.bodies[-1]["messages"][-1]["content"] == PII_TEXT
