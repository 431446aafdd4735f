"""Between the edge and the engine: which peers may connect, and whose X-Forwarded-For to believe.

An engine on an edge host listens on loopback only: its one peer is the local nginx. An engine-only
host listens beyond loopback for its edges, so it admits a connection only from an edge address
(`security.edge_addresses`) that also presents the shared secret nginx adds to every request
(`X-Assistant-Edge`); anyone else gets a bare 403 before routing, logging or parsing a body.
Loopback peers (health checks on the host itself) pass, and so does a GET of the metrics path from
the metrics networks (`security.metrics_allow_networks`): Prometheus scrapes the host where it
listens, and the metrics route itself checks those networks again.

Only those peers' X-Forwarded-For is believed, and that of `security.trusted_proxies` (networks of
proxies that are not edges, like a Kubernetes ingress controller's pods); uvicorn's own
ProxyHeadersMiddleware does the rewriting, so a client address seen by auth and the rate limits is
the one the edge or proxy saw.
"""

from __future__ import annotations

import hmac
from ipaddress import ip_address, ip_network

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from .auth import is_loopback

HEADER = b"x-assistant-edge"
_LOOPBACK = ["127.0.0.1", "::1"]
_REFUSED = b'{"error":{"code":"forbidden","message":"this engine answers its edges only"}}'


def proxy_headers_middleware(app: ASGIApp, edge_addresses: list[str], trusted_proxies: list[str]) -> ASGIApp:
    """Rewrite the client address from X-Forwarded-For, for the local proxy, the edges and the
    trusted proxy networks only: the client is the rightmost address none of them holds."""
    return ProxyHeadersMiddleware(app, trusted_hosts=[*_LOOPBACK, *edge_addresses, *trusted_proxies])


class EdgeGuard:
    """Refuse every connection that is neither loopback nor an edge holding the shared secret."""

    def __init__(
        self,
        app: ASGIApp,
        edge_addresses: list[str],
        secret: str,
        metrics_path: str | None = None,
        metrics_networks: list[str] | None = None,
    ) -> None:
        self.app = app
        self.edges = frozenset(edge_addresses)
        self.secret = secret.encode()
        self.metrics_path = metrics_path
        self.metrics_networks = [ip_network(n) for n in metrics_networks or []]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._admitted(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_REFUSED)).encode())]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": _REFUSED})
            return
        await self.app(scope, receive, send)

    def _admitted(self, scope: Scope) -> bool:
        peer = scope.get("client")
        host = peer[0] if peer else None
        if is_loopback(host):
            return True
        if self._scrape(scope, host):
            return True
        if host not in self.edges:
            return False
        presented = next((value for key, value in scope["headers"] if key == HEADER), b"")
        return hmac.compare_digest(presented, self.secret)

    def _scrape(self, scope: Scope, host: str | None) -> bool:
        """A GET of the metrics path from a metrics network (Prometheus, without the edge secret)."""
        if self.metrics_path is None or scope["type"] != "http" or host is None:
            return False
        if scope.get("method") != "GET" or scope.get("path") != self.metrics_path:
            return False
        try:
            address = ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.metrics_networks)
