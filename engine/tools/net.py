"""The one way a network tool reads a URL: `safe_get`, guarded against server-side request forgery.

Before every request (the first and each redirect) the host must pass the domain allow-list, its
name is resolved, and every address it resolves to must be public (not private, loopback,
link-local, multicast, reserved, unspecified or shared) unless it lies in `allowed_networks`. The
connection then goes to the address that was checked, with the name in the Host header and in TLS
SNI/certificate checks, so a second DNS answer cannot swap in an inner address (no rebinding gap).
Environment proxies are ignored: a proxy would do its own resolution.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from ..settings import FetchToolSettings
from .base import ToolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_REDIRECTS = {301, 302, 303, 307, 308}
USER_AGENT = "assistantctl-tools/1"


@dataclass(frozen=True)
class Page:
    url: str  # after redirects
    status: int
    content_type: str
    body: bytes
    truncated: bool  # the body was cut at max_bytes

    def text(self) -> str:
        charset = "utf-8"
        for part in self.content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.body.decode(charset, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")


def forbidden(address: IPAddress, allowed: list[str]) -> bool:
    """Whether a tool may not connect to `address`: anything but a global unicast address, unless
    an allowed network holds it. IPv4 inside IPv6 (::ffff:a.b.c.d, 6to4, NAT64) is judged as IPv4."""
    inner = _embedded_ipv4(address) or address
    if any(inner in ipaddress.ip_network(net, strict=False) for net in allowed):
        return False
    return not inner.is_global or inner.is_multicast or inner.is_reserved or inner.is_unspecified


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def domain_allowed(host: str, allowed_domains: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return not allowed_domains or any(
        host == d.lower().rstrip(".") or host.endswith("." + d.lower().strip(".")) for d in allowed_domains
    )


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the resolver runs in asyncio's thread pool)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ToolError(f"cannot resolve '{host}'") from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


async def _checked_address(url: httpx.URL, settings: FetchToolSettings) -> IPAddress:
    if url.scheme not in ("http", "https") or not url.host:
        raise ToolError("only http and https URLs can be fetched")
    if url.userinfo:
        raise ToolError("URLs with credentials are not fetched")
    if not domain_allowed(url.host, settings.allowed_domains):
        raise ToolError(f"'{url.host}' is not in the allowed domains")
    addresses = await resolve(url.host, url.port or (443 if url.scheme == "https" else 80))
    bad = [a for a in addresses if forbidden(a, settings.allowed_networks)]
    if bad or not addresses:
        raise ToolError(f"'{url.host}' resolves to an address tools may not reach ({bad[0] if bad else 'none'})")
    return addresses[0]


async def safe_get(raw_url: str, settings: FetchToolSettings, headers: dict[str, str] | None = None) -> Page:
    """GET `raw_url` within the settings' limits; ToolError for anything refused or failed."""
    try:
        url = httpx.URL(raw_url)
    except (httpx.InvalidURL, TypeError):
        raise ToolError("that is not a valid URL") from None
    timeout = httpx.Timeout(settings.timeout_seconds)
    try:
        async with asyncio.timeout(settings.timeout_seconds):
            async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout) as client:
                for _ in range(settings.max_redirects + 1):
                    page, location = await _one(client, url, settings, headers or {})
                    if location is None:
                        return page
                    url = url.join(location)
    except TimeoutError:
        raise ToolError(f"the fetch did not finish within {settings.timeout_seconds:g} seconds") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"the fetch failed: {type(exc).__name__}") from None
    raise ToolError(f"more than {settings.max_redirects} redirects")


async def _one(
    client: httpx.AsyncClient, url: httpx.URL, settings: FetchToolSettings, headers: dict[str, str]
) -> tuple[Page, str | None]:
    address = await _checked_address(url, settings)
    host = f"[{address}]" if address.version == 6 else str(address)
    name = f"[{url.host}]" if ":" in url.host else url.host  # an IPv6 literal keeps its brackets
    default_port = url.port is None or url.port == {"http": 80, "https": 443}[url.scheme]
    request = client.build_request(
        "GET",
        url.copy_with(host=host),
        headers={
            "Host": name if default_port else f"{name}:{url.port}",
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",  # max_bytes counts what is read: no decompression bombs
            **headers,
        },
        extensions={"sni_hostname": url.host} if url.scheme == "https" else {},
    )
    response = await client.send(request, stream=True)
    try:
        location = response.headers.get("location") if response.status_code in _REDIRECTS else None
        body, truncated = await _read(response, settings.max_bytes)
    finally:
        await response.aclose()
    page = Page(str(url), response.status_code, response.headers.get("content-type", ""), body, truncated)
    return page, location


async def _read(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False
