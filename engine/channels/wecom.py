"""WeCom (企业微信) callback mode.

Every call carries `msg_signature`, `timestamp` and `nonce` in the query. Verification is a GET
with `echostr`: the signature covers it, and the answer is its decrypted plaintext. Messages are
POSTed as XML `<xml>...<Encrypt>ciphertext</Encrypt></xml>`; the signature covers the ciphertext
and is checked before decrypting; the plaintext is XML again (`MsgType`, `Content`,
`FromUserName`, `MsgId` (the de-duplication key), `AgentID`). See wecom_crypto for the scheme.
The signature does not expire, so a captured call could be replayed for ever: a `timestamp` more
than FRESHNESS_SECONDS from this host's clock, either way, is refused (401) before anything else.

Replies go through the API (the passive reply in the HTTP answer must come within 5 seconds):
`GET <api_base>/cgi-bin/gettoken?corpid=&corpsecret=` for an access token (cached until shortly
before it expires), then `POST <api_base>/cgi-bin/message/send?access_token=` with a text message
to the sender. Replying needs the channel's `secret` and an agent id (the settings' `agent_id`,
else the message's `AgentID`); a text message is at most 2048 bytes.
"""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ElementTree
from typing import ClassVar

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..errors import ApiError
from ..models.adapters.base import UpstreamError
from . import wecom_crypto as crypto
from .base import ChannelConfig, Inbound, Rejected, read_body, same
from .outbound import Outbound

# Expired or invalid access token: fetch a new one and try once more.
_TOKEN_ERRORS = frozenset({40001, 40014, 42001})
_TOKEN_MARGIN_SECONDS = 300
# How far a callback's timestamp (Unix seconds) may be from our clock: WeCom's retries come within
# seconds, and a host whose clock is further off than this needs NTP, not a wider window.
FRESHNESS_SECONDS = 300
# No document type, no entities: the XML parser never expands anything an attacker sends.
_DOCTYPE = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def _xml(raw: bytes | str, what: str) -> ElementTree.Element:
    data = raw.encode() if isinstance(raw, str) else raw
    if _DOCTYPE.search(data):
        raise Rejected(400, f"{what} declares a DTD or entities")
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError:
        raise Rejected(400, f"{what} is not well-formed XML") from None


def _text(root: ElementTree.Element, tag: str) -> str | None:
    node = root.find(tag)
    return node.text if node is not None and node.text else None


def _signed_query(request: Request) -> tuple[str, str, str]:
    """msg_signature, timestamp and nonce, once all are there and the timestamp is fresh."""
    query = request.query_params
    given, timestamp, nonce = query.get("msg_signature"), query.get("timestamp"), query.get("nonce")
    if not given or timestamp is None or nonce is None:
        raise Rejected(401, "missing msg_signature, timestamp or nonce")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise Rejected(400, "timestamp is not Unix seconds")
    if abs(time.time() - int(timestamp)) > FRESHNESS_SECONDS:
        raise Rejected(401, f"timestamp more than {FRESHNESS_SECONDS} s from this host's clock")
    return given, timestamp, nonce


class WeCom:
    name: ClassVar[str] = "wecom"
    default_path: ClassVar[str] = "/webhooks/wecom"
    default_api_base: ClassVar[str] = "https://qyapi.weixin.qq.com"
    required_secrets: ClassVar[tuple[str, ...]] = ("token", "encoding_aes_key")
    required_options: ClassVar[tuple[str, ...]] = ("corp_id",)
    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")
    max_reply: ClassVar[int] = 2048

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}  # (base, corp, secret) -> token, expiry
        self._token_lock = asyncio.Lock()

    def reply_size(self, text: str) -> int:
        return len(text.encode())

    def _verified(self, request: Request, config: ChannelConfig, encrypted: str | None) -> str:
        """The message inside `encrypted` once the query's signature over it checks out."""
        given, timestamp, nonce = _signed_query(request)
        if not encrypted:
            raise Rejected(400, "no ciphertext (echostr or Encrypt) to verify")
        expected = crypto.signature(config.secrets["token"], timestamp, nonce, encrypted)
        if not same(given.lower(), expected):
            raise Rejected(401, "wrong msg_signature")
        try:
            key = crypto.aes_key(config.secrets["encoding_aes_key"])
        except crypto.CryptoError as exc:  # our configuration, not the request, is wrong
            raise ApiError(503, "unavailable", f"wecom encoding_aes_key unusable: {exc}") from None
        try:
            return crypto.decrypt(key, encrypted, config.option("corp_id") or "")
        except crypto.CryptoError as exc:
            raise Rejected(400, f"ciphertext refused: {exc}") from None

    async def handshake(self, request: Request, config: ChannelConfig) -> Response:
        return PlainTextResponse(self._verified(request, config, request.query_params.get("echostr")))

    async def receive(self, request: Request, config: ChannelConfig, max_bytes: int) -> list[Inbound]:
        _signed_query(request)  # before reading any body
        envelope = _xml(await read_body(request, max_bytes), "body")
        message = _xml(self._verified(request, config, _text(envelope, "Encrypt")), "decrypted message")
        content, sender, msg_id = _text(message, "Content"), _text(message, "FromUserName"), _text(message, "MsgId")
        if _text(message, "MsgType") != "text" or content is None or not sender or not msg_id:
            return []  # events (enter_agent, subscribe ...), images, voice
        agent = _text(message, "AgentID")
        return [
            Inbound(
                update_id=msg_id,
                user_id=sender,
                chat_id=sender,
                text=content,
                extra={"agent_id": agent} if agent else {},
            )
        ]

    async def send(self, outbound: Outbound, config: ChannelConfig, to: Inbound, text: str) -> None:
        secret = config.secrets.get("secret")
        agent = config.option("agent_id") or to.extra.get("agent_id")
        if not secret or not agent or not agent.isdigit():
            raise UpstreamError("replying needs channels.wecom.secret and an agent_id", retryable=False)
        body = {"touser": to.chat_id, "msgtype": "text", "agentid": int(agent), "text": {"content": text}}
        for attempt in (1, 2):
            token = await self._token(outbound, config, secret, fresh=attempt == 2)
            answer = await outbound.call("POST", "/cgi-bin/message/send", params={"access_token": token}, body=body)
            code = answer.get("errcode", 0)
            if code == 0:
                return
            if code not in _TOKEN_ERRORS:
                break
        raise UpstreamError(f"message/send errcode {code}: {str(answer.get('errmsg'))[:120]}", retryable=False)

    async def _token(self, outbound: Outbound, config: ChannelConfig, secret: str, fresh: bool) -> str:
        corp = config.option("corp_id") or ""
        key = (config.api_base, corp, secret)
        async with self._token_lock:  # one gettoken at a time: the others wait and reuse it
            cached = self._tokens.get(key)
            if cached and not fresh and cached[1] > time.monotonic():
                return cached[0]
            answer = await outbound.call("GET", "/cgi-bin/gettoken", params={"corpid": corp, "corpsecret": secret})
            token, expires = answer.get("access_token"), answer.get("expires_in", 7200)
            if answer.get("errcode", 0) != 0 or not isinstance(token, str) or not token:
                raise UpstreamError(f"gettoken errcode {answer.get('errcode')}", retryable=True)
            lifetime = max(float(expires) - _TOKEN_MARGIN_SECONDS, 60.0) if isinstance(expires, int) else 60.0
            self._tokens[key] = (token, time.monotonic() + lifetime)
            return token
