"""The reference ceiling: the least a Python forwarder can do, with aiohttp's client and raw ASGI.

    BARE_UPSTREAM=http://127.0.0.1:9100 uvicorn --factory bench.bare_forwarder:create_app --workers 2 ...

POST /v1/chat/completions is forwarded as is to $BARE_UPSTREAM/v1/chat/completions with one
shared aiohttp session; the answer is relayed whole, or chunk by chunk when it is an event stream.
No auth, limits, history, logs or metrics: what the engine does beyond this is its overhead.
"""

from __future__ import annotations

import os

import aiohttp

_STREAM = b"text/event-stream"


def create_app():  # noqa: ANN201 - a plain ASGI callable
    upstream = os.environ["BARE_UPSTREAM"].rstrip("/") + "/v1/chat/completions"
    session: aiohttp.ClientSession | None = None

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        nonlocal session
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            await session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {"Content-Type": "application/json"}
        async with session.post(upstream, data=body, headers=headers) as response:
            kind = response.headers.get("Content-Type", "application/json").encode()
            start = {"type": "http.response.start", "status": response.status, "headers": [(b"content-type", kind)]}
            if not kind.startswith(_STREAM):
                data = await response.read()
                start["headers"].append((b"content-length", str(len(data)).encode()))
                await send(start)
                await send({"type": "http.response.body", "body": data})
                return
            await send(start)
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app
