"""Chat platform webhooks against the real engine on loopback, with a fake of the platforms' send APIs.

For each of Telegram, WhatsApp and WeCom: a correctly signed text message is answered exactly once
through the platform's API with the model's answer and stored; a forged, unsigned, malformed or
oversized request is refused with a 4xx and leaves no trace (no reply, no history row); a
redelivery is acknowledged without a second reply; the platform's URL handshake works. Signatures
and WeCom's encryption are computed here, independently, from the platforms' documented schemes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from assistantctl.engine.channels.delivery import MEDIA_TEXT
from assistantctl.engine.channels.telegram_media import refusal
from assistantctl.engine.models.adapters.builtin import builtin_answer
from assistantctl.engine.settings import ChannelSettings
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_platforms import WECOM_ACCESS_TOKEN, FakePlatforms

BOT_TOKEN = "123456:FAKE-BOT-TOKEN"
TG_SECRET = "FAKE-TG-WEBHOOK-SECRET"
WA_ACCESS, WA_VERIFY, WA_APP_SECRET = "FAKE-WA-ACCESS-TOKEN", "FAKE-WA-VERIFY-TOKEN", "FAKE-WA-APP-SECRET"
PHONE_ID = "109876543210"
WECOM_TOKEN, WECOM_SECRET = "FAKEwecomToken", "FAKE-WECOM-CORP-SECRET"
AES_KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")  # 43 characters, as WeCom issues them
CORP_ID, AGENT_ID = "ww1234567890abcdef", 1000002
SECRETS = {
    "channels.telegram.bot_token": BOT_TOKEN,
    "channels.telegram.webhook_secret": TG_SECRET,
    "channels.whatsapp.access_token": WA_ACCESS,
    "channels.whatsapp.verify_token": WA_VERIFY,
    "channels.whatsapp.app_secret": WA_APP_SECRET,
    "channels.wecom.token": WECOM_TOKEN,
    "channels.wecom.encoding_aes_key": AES_KEY,
    "channels.wecom.secret": WECOM_SECRET,
}
TG, WA, WC = "/webhooks/telegram", "/webhooks/whatsapp", "/webhooks/wecom"
TG_ALLOWED = [*(str(i) for i in range(1001, 1010)), "alice_ops"]


def _names(channel: str, *purposes: str) -> dict[str, str]:
    return {p: f"channels.{channel}.{p}" for p in purposes}


def channels(api_base: str, allowed: list[str] | None = None) -> list[ChannelSettings]:
    return [
        ChannelSettings(
            name="telegram",
            path=TG,
            allowed_users=allowed if allowed is not None else TG_ALLOWED,
            secrets=_names("telegram", "bot_token", "webhook_secret"),
            api_base=api_base,
        ),
        ChannelSettings(
            name="whatsapp",
            path=WA,
            secrets=_names("whatsapp", "access_token", "verify_token", "app_secret"),
            options={"phone_number_id": PHONE_ID},
            api_base=api_base,
        ),
        ChannelSettings(
            name="wecom",
            path=WC,
            secrets=_names("wecom", "token", "encoding_aes_key", "secret"),
            options={"corp_id": CORP_ID, "agent_id": AGENT_ID},
            api_base=api_base,
        ),
    ]


@pytest.fixture(scope="module")
def engine(module_dir: Path, platforms: FakePlatforms) -> Iterator[RunningEngine]:
    running = start_engine(module_dir / "webhooks", [model("local")], secrets=SECRETS, channels=channels(platforms.url))
    yield running
    stop_engine(running)


@pytest.fixture
def fake(platforms: FakePlatforms) -> FakePlatforms:
    platforms.reset()
    return platforms


def stored(engine: RunningEngine, user: str | None = None) -> int:
    """History rows, of one user or of everyone, read from the engine's SQLite file."""
    with contextlib.closing(sqlite3.connect(engine.root / "data" / "history.sqlite3")) as db:
        query = "SELECT COUNT(*) FROM messages" + (" WHERE user = ?" if user else "")
        return db.execute(query, (user,) if user else ()).fetchone()[0]


def answer_to(text: str) -> str:
    return builtin_answer([{"role": "user", "content": text}])


def assert_no_trace(engine: RunningEngine, fake: FakePlatforms, rows_before: int) -> None:
    time.sleep(0.3)  # a reply would be sent from a background task: give one the time to show up
    assert fake.sent == [] and fake.tokens_issued == []
    assert stored(engine) == rows_before


def refusals(engine: RunningEngine, channel: str) -> list[str]:
    return [line for line in engine.log_lines() if "webhook refused" in line and f"channel={channel}" in line]


def assert_refusals_logged_without_secrets(engine: RunningEngine, channel: str, before: int, count: int) -> None:
    lines = refusals(engine, channel)
    assert len(lines) == before + count and all(" WARNING engine.app " in line for line in lines)
    log = (engine.root / "logs" / "engine.log").read_text()
    leaked = [name for name, value in SECRETS.items() if value in log]
    assert not leaked, f"secrets in the log: {leaked}"


# --- Telegram -------------------------------------------------------------------------------------


def tg_update(update_id: int, user_id: int, text: str | None = "hello", username: str | None = None) -> dict:
    sender = {"id": user_id, "is_bot": False, "first_name": "Test", **({"username": username} if username else {})}
    message = {"message_id": update_id, "from": sender, "chat": {"id": user_id, "type": "private"}, "date": 1}
    message.update({"text": text} if text is not None else {"photo": [{"file_id": "x", "width": 1, "height": 1}]})
    return {"update_id": update_id, "message": message}


def tg_post(engine: RunningEngine, body: dict | bytes, secret: str | None = TG_SECRET) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    return httpx.post(engine.url + TG, content=data, headers=headers, timeout=10)


def test_telegram_text_message_gets_exactly_one_reply_with_the_models_answer(engine, fake) -> None:
    response = tg_post(engine, tg_update(501, 1001, "what is the time?"))
    assert response.status_code == 200
    (call,) = fake.wait_for("telegram", 1)
    assert call["path"] == f"/bot{BOT_TOKEN}/sendMessage"
    assert call["body"] == {"chat_id": 1001, "text": answer_to("what is the time?")}
    assert stored(engine, "telegram:1001") == 2
    time.sleep(0.2)
    assert len(fake.of("telegram")) == 1


def test_telegram_redelivery_gets_no_second_reply(engine, fake) -> None:
    update = tg_update(502, 1002, "once please")
    assert tg_post(engine, update).status_code == 200
    assert tg_post(engine, update).status_code == 200  # Telegram retrying: same update_id
    fake.wait_for("telegram", 1)
    assert tg_post(engine, update).status_code == 200  # and once more after the reply went out
    time.sleep(0.3)
    assert len(fake.of("telegram")) == 1 and stored(engine, "telegram:1002") == 2


def test_telegram_forged_or_malformed_requests_are_refused_and_leave_no_trace(engine, fake) -> None:
    rows, logged = stored(engine), len(refusals(engine, "telegram"))
    update = tg_update(503, 1003)
    cases = [
        (tg_post(engine, update, secret=None), 401),
        (tg_post(engine, update, secret="FAKE-TG-WEBHOOK-SECREX"), 401),
        (tg_post(engine, update, secret=""), 401),
        (tg_post(engine, b"{not json", TG_SECRET), 400),
        (tg_post(engine, b"[1, 2]", TG_SECRET), 400),
        (tg_post(engine, {"message": update["message"]}, TG_SECRET), 400),  # no update_id
        (tg_post(engine, {**update, "pad": "x" * 300_000}, TG_SECRET), 413),
        (tg_post(engine, {**update, "pad": "x" * 300_000}, None), 401),  # the header is checked first
    ]
    assert [r.status_code for r, _ in cases] == [status for _, status in cases]
    assert all(r.json()["error"]["code"] for r, _ in cases)
    assert_no_trace(engine, fake, rows)
    assert_refusals_logged_without_secrets(engine, "telegram", logged, len(cases))
    assert tg_post(engine, update).status_code == 200  # none of the refusals claimed the update
    assert fake.wait_for("telegram", 1)[0]["body"]["chat_id"] == 1003


def tg_media(update_id: int, user_id: int, kind: str) -> dict:
    update = tg_update(update_id, user_id, text="unused")
    message = update["message"]
    del message["text"]
    message[kind] = [{"file_id": "AgAD", "width": 90, "height": 90}] if kind == "photo" else {"file_id": "AgAD"}
    return update


def test_telegram_photos_voice_and_files_get_a_polite_reply_not_silence(engine, fake) -> None:
    rows = stored(engine)
    kinds = ("photo", "voice", "audio", "document", "video", "video_note", "sticker", "animation")
    for i, kind in enumerate(kinds):
        assert tg_post(engine, tg_media(520 + i, 1005, kind)).status_code == 200
    assert tg_post(engine, tg_media(520, 1005, "photo")).status_code == 200  # redelivered
    calls = fake.wait_for("telegram", len(kinds))
    time.sleep(0.3)
    polite = refusal(images=False)  # a text-only model; the "document" is no text file
    assert [c["body"] for c in fake.of("telegram")] == [{"chat_id": 1005, "text": polite}] * len(kinds)
    assert stored(engine) == rows and calls[0]["path"] == f"/bot{BOT_TOKEN}/sendMessage"  # no model call


def test_telegram_non_text_updates_and_strangers_are_acknowledged_and_ignored(engine, fake) -> None:
    rows = stored(engine)
    edited = {"update_id": 505, "edited_message": tg_update(505, 1004)["message"]}
    stranger = tg_update(506, 6666, "let me in")
    stranger_photo = tg_media(508, 6666, "photo")
    service = tg_update(509, 1004, text="unused")
    del service["message"]["text"]
    service["message"]["new_chat_title"] = "renamed"
    for update in (edited, stranger, stranger_photo, service):
        assert tg_post(engine, update).status_code == 200
    assert_no_trace(engine, fake, rows)
    assert tg_post(engine, tg_update(507, 7777, "hi", username="alice_ops")).status_code == 200  # allowed by name
    assert fake.wait_for("telegram", 1)[0]["body"]["chat_id"] == 7777


# --- WhatsApp -------------------------------------------------------------------------------------


def wa_payload(
    message_id: str, sender: str, text: str | None = "hola", phone_id: str = PHONE_ID, kind: str = "image"
) -> bytes:
    message = {"from": sender, "id": message_id, "timestamp": "1700000000"}
    media = {"id": "1234567890", "mime_type": "application/octet-stream", "sha256": "x"}
    message.update({"type": "text", "text": {"body": text}} if text is not None else {"type": kind, kind: media})
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_id},
        "contacts": [{"profile": {"name": "Test"}, "wa_id": sender}],
        "messages": [message],
    }
    entry = {"id": "WABA", "changes": [{"field": "messages", "value": value}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def wa_signature(raw: bytes, secret: str = WA_APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def wa_post(engine: RunningEngine, raw: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json", **({"X-Hub-Signature-256": signature} if signature else {})}
    return httpx.post(engine.url + WA, content=raw, headers=headers, timeout=10)


def test_whatsapp_verification_echoes_the_challenge_only_for_the_verify_token(engine, fake) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": WA_VERIFY, "hub.challenge": "1158201444"}
    ok = httpx.get(engine.url + WA, params=query)
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert httpx.get(engine.url + WA, params={**query, "hub.verify_token": "guess"}).status_code == 403
    assert httpx.get(engine.url + WA, params={**query, "hub.mode": "unsubscribe"}).status_code == 403
    assert httpx.get(engine.url + WA, params={"hub.mode": "subscribe"}).status_code == 400
    assert fake.sent == []


def test_whatsapp_text_message_gets_exactly_one_reply_and_a_redelivery_none(engine, fake) -> None:
    raw = wa_payload("wamid.IN1", "15551230001", "how are you?")
    assert wa_post(engine, raw, wa_signature(raw)).status_code == 200
    (call,) = fake.wait_for("whatsapp", 1)
    assert call["path"] == f"/{PHONE_ID}/messages"
    assert call["headers"]["authorization"] == f"Bearer {WA_ACCESS}"
    assert call["body"]["to"] == "15551230001" and call["body"]["type"] == "text"
    assert call["body"]["text"]["body"] == answer_to("how are you?")
    assert wa_post(engine, raw, wa_signature(raw)).status_code == 200  # redelivered
    time.sleep(0.3)
    assert len(fake.of("whatsapp")) == 1 and stored(engine, "whatsapp:15551230001") == 2


def test_whatsapp_forged_or_malformed_requests_are_refused_and_leave_no_trace(engine, fake) -> None:
    rows, logged = stored(engine), len(refusals(engine, "whatsapp"))
    raw = wa_payload("wamid.IN2", "15551230002")
    other = wa_payload("wamid.IN3", "15551230002", "something else")
    big = wa_payload("wamid.IN4", "15551230002", "x" * 300_000)
    cases = [
        (wa_post(engine, raw, None), 401),
        (wa_post(engine, raw, wa_signature(raw, "guessed-secret")), 401),
        (wa_post(engine, raw, wa_signature(other)), 401),  # a real signature of another body
        (wa_post(engine, raw, wa_signature(raw).replace("sha256=", "sha1=")), 401),
        (wa_post(engine, b"{oops", wa_signature(b"{oops")), 400),  # signed, but not JSON
        (wa_post(engine, b'{"entry": 1}', wa_signature(b'{"entry": 1}')), 400),
        (wa_post(engine, big, wa_signature(big)), 413),
    ]
    assert [r.status_code for r, _ in cases] == [status for _, status in cases]
    assert_no_trace(engine, fake, rows)
    assert_refusals_logged_without_secrets(engine, "whatsapp", logged, len(cases))


def test_whatsapp_statuses_reactions_and_other_numbers_are_acknowledged_and_ignored(engine, fake) -> None:
    rows = stored(engine)
    statuses = json.dumps({"entry": [{"changes": [{"value": {"statuses": [{"id": "wamid.OUT"}]}}]}]}).encode()
    reaction = wa_payload("wamid.IN7", "15551230003", None, kind="reaction")
    other_number = wa_payload("wamid.IN6", "1555", "hi", "999")
    for raw in (statuses, reaction, other_number, wa_payload("wamid.IN8", "1555", None, "999")):
        assert wa_post(engine, raw, wa_signature(raw)).status_code == 200
    assert_no_trace(engine, fake, rows)


def test_whatsapp_media_messages_get_a_polite_reply_not_silence(engine, fake) -> None:
    rows = stored(engine)
    kinds = ("image", "audio", "document", "video", "sticker", "location", "contacts", "unsupported")
    for i, kind in enumerate(kinds):
        raw = wa_payload(f"wamid.MEDIA{i}", "15551230004", None, kind=kind)
        assert wa_post(engine, raw, wa_signature(raw)).status_code == 200
    again = wa_payload("wamid.MEDIA0", "15551230004", None, kind="image")
    assert wa_post(engine, again, wa_signature(again)).status_code == 200  # redelivered: no second reply
    calls = fake.wait_for("whatsapp", len(kinds))
    time.sleep(0.3)
    assert len(fake.of("whatsapp")) == len(kinds)
    assert {(c["body"]["to"], c["body"]["text"]["body"]) for c in calls} == {("15551230004", MEDIA_TEXT)}
    assert stored(engine) == rows  # no model call, no history turn


# --- WeCom ----------------------------------------------------------------------------------------


def seal(message: str, receive_id: str = CORP_ID) -> str:
    """WeCom's documented encryption, written independently of the engine's."""
    key = base64.b64decode(AES_KEY + "=")
    body = message.encode()
    padder = padding.PKCS7(256).padder()  # 32-byte blocks
    plain = padder.update(os.urandom(16) + len(body).to_bytes(4, "big") + body + receive_id.encode())
    plain += padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def unseal(encrypted: str) -> tuple[str, str]:
    key = base64.b64decode(AES_KEY + "=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
    unpadder = padding.PKCS7(256).unpadder()
    plain = unpadder.update(plain) + unpadder.finalize()
    length = int.from_bytes(plain[16:20], "big")
    return plain[20 : 20 + length].decode(), plain[20 + length :].decode()


def wc_sign(encrypted: str, timestamp: str | None = None, nonce: str = "n0nce", token: str = WECOM_TOKEN) -> dict:
    timestamp = str(int(time.time())) if timestamp is None else timestamp  # fresh unless a test says otherwise
    digest = hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()
    return {"msg_signature": digest, "timestamp": timestamp, "nonce": nonce}


def wc_message(msg_id: str, sender: str, text: str | None = "你好") -> str:
    kind = (
        f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content>"
        if text is not None
        else ("<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event>")
    )
    return (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[{sender}]]></FromUserName>"
        f"<CreateTime>1700000000</CreateTime>{kind}<MsgId>{msg_id}</MsgId><AgentID>{AGENT_ID}</AgentID></xml>"
    )


def wc_post(engine: RunningEngine, encrypted: str, params: dict | None = None, body: str | None = None):
    envelope = f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    params = wc_sign(encrypted) if params is None else params
    return httpx.post(engine.url + WC, params=params, content=(body or envelope).encode(), timeout=10)


def test_wecom_url_verification_answers_the_decrypted_echostr(engine, fake) -> None:
    echostr = seal("5927782489442352469")
    ok = httpx.get(engine.url + WC, params={**wc_sign(echostr), "echostr": echostr})
    assert (ok.status_code, ok.text) == (200, "5927782489442352469")
    forged = httpx.get(engine.url + WC, params={**wc_sign(echostr, token="guess"), "echostr": echostr})
    assert forged.status_code == 401
    foreign = seal("123", receive_id="wwSomeoneElse")
    assert httpx.get(engine.url + WC, params={**wc_sign(foreign), "echostr": foreign}).status_code == 400
    assert httpx.get(engine.url + WC, params={"echostr": echostr}).status_code == 401
    assert fake.sent == []


def test_wecom_text_message_is_answered_once_through_the_api_with_one_token(engine, fake) -> None:
    first, second = seal(wc_message("900001", "zhangsan", "第一个问题")), seal(wc_message("900002", "zhangsan", "2nd"))
    assert wc_post(engine, first).status_code == 200
    fake.wait_for("wecom", 1)
    assert wc_post(engine, second).status_code == 200
    assert wc_post(engine, first).status_code == 200  # redelivered
    calls = fake.wait_for("wecom", 2)
    time.sleep(0.3)
    assert len(fake.of("wecom")) == 2
    assert fake.tokens_issued == [{"corpid": CORP_ID, "corpsecret": WECOM_SECRET}]  # cached for the second
    assert calls[0]["query"] == {"access_token": WECOM_ACCESS_TOKEN}
    assert calls[0]["body"] == {
        "touser": "zhangsan",
        "msgtype": "text",
        "agentid": AGENT_ID,
        "text": {"content": answer_to("第一个问题")},
    }
    assert stored(engine, "wecom:zhangsan") == 4


def test_wecom_forged_or_malformed_requests_are_refused_and_leave_no_trace(engine, fake) -> None:
    rows, logged = stored(engine), len(refusals(engine, "wecom"))
    good = seal(wc_message("900010", "lisi"))
    envelope = "<xml><Encrypt><![CDATA[{}]]></Encrypt></xml>"
    bomb = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml><Encrypt>&a;</Encrypt></xml>'
    cases = [
        (wc_post(engine, good, wc_sign(good, token="guess")), 401),
        (wc_post(engine, good, {**wc_sign(good), "nonce": "other"}), 401),
        (wc_post(engine, good, {}), 401),
        (wc_post(engine, good, body="<xml><Encrypt>unclosed"), 400),
        (wc_post(engine, good, body=bomb), 400),
        (wc_post(engine, "", body="<xml><ToUserName>x</ToUserName></xml>"), 400),  # no Encrypt
        (wc_post(engine, "bm90IGNpcGhlcnRleHQ=", body=envelope.format("bm90IGNpcGhlcnRleHQ=")), 400),  # signed junk
        (wc_post(engine, seal(wc_message("900011", "lisi"), "wwOther")), 400),  # for another corp
        (wc_post(engine, good, body=envelope.format("A" * 300_000)), 413),
    ]
    assert [r.status_code for r, _ in cases] == [status for _, status in cases]
    assert_no_trace(engine, fake, rows)
    assert_refusals_logged_without_secrets(engine, "wecom", logged, len(cases))


def test_wecom_callbacks_outside_the_freshness_window_are_refused_and_leave_no_trace(engine, fake) -> None:
    rows, logged = stored(engine), len(refusals(engine, "wecom"))
    now = int(time.time())
    sealed = [seal(wc_message(f"90003{i}", "zhaoliu", "still there?")) for i in range(5)]
    # Every one correctly signed: only the timestamp is wrong (the window is 300 s; ±400 leaves a slow run room).
    cases = [
        (wc_post(engine, sealed[0], wc_sign(sealed[0], str(now - 400))), 401),
        (wc_post(engine, sealed[1], wc_sign(sealed[1], str(now - 86_400))), 401),
        (wc_post(engine, sealed[2], wc_sign(sealed[2], str(now + 400))), 401),
        (wc_post(engine, sealed[3], wc_sign(sealed[3], "1700000000")), 401),
        (wc_post(engine, sealed[4], wc_sign(sealed[4], "soon")), 400),
    ]
    echostr = seal("5927782489442352469")
    stale_handshake = httpx.get(engine.url + WC, params={**wc_sign(echostr, str(now - 600)), "echostr": echostr})
    cases.append((stale_handshake, 401))
    assert [r.status_code for r, _ in cases] == [status for _, status in cases]
    assert_no_trace(engine, fake, rows)
    assert_refusals_logged_without_secrets(engine, "wecom", logged, len(cases))
    # A few seconds of clock skew either way is inside the window; the refusals claimed nothing.
    assert wc_post(engine, sealed[0], wc_sign(sealed[0], str(now - 30))).status_code == 200
    assert wc_post(engine, sealed[2], wc_sign(sealed[2], str(now + 30))).status_code == 200
    assert len(fake.wait_for("wecom", 2)) == 2


def test_wecom_events_are_acknowledged_and_ignored(engine, fake) -> None:
    rows = stored(engine)
    assert wc_post(engine, seal(wc_message("900020", "wangwu", None))).status_code == 200
    assert_no_trace(engine, fake, rows)


def test_wecom_crypto_round_trips_with_an_independent_implementation() -> None:
    from assistantctl.engine.channels import wecom_crypto

    key = wecom_crypto.aes_key(AES_KEY)
    for text in ("", "a", "x" * 31, "y" * 32, "<xml>多字节 ✓</xml>" * 50):
        assert wecom_crypto.decrypt(key, seal(text), CORP_ID) == text
        assert unseal(wecom_crypto.encrypt(key, text, CORP_ID)) == (text, CORP_ID)
    sealed = seal("hi")
    assert wecom_crypto.signature(WECOM_TOKEN, "1", "2", sealed) == wc_sign(sealed, "1", "2")["msg_signature"]
    with pytest.raises(wecom_crypto.CryptoError):
        wecom_crypto.decrypt(key, seal("hi", "wwOther"), CORP_ID)
