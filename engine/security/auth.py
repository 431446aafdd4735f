"""Who is asking, and what they may do: an API key, a JWT, or the one anonymous user.

A request is made by a `Caller`: a user and the scopes they hold (`chat`, `history`, `admin`;
admin holds all three). It comes from, in this order:

- `Authorization: Bearer sk-ast-...`: an API key (engine/security/keys.py), with the scopes it was made with;
- `Authorization: Bearer <JWT>` when JWT is configured: the token's `sub`, its `scope` claim
  (space-separated) or `scopes` list, `admin: true` adding admin; chat and history when it names none.
  `exp` is required, and a token may not live longer than `jwt_max_lifetime_seconds`;
- no credentials: the single anonymous user, only where `anonymous` allows it: `loopback` (the
  default) admits clients on the host itself, `anywhere` every client, `off` nobody. The address
  is the client's own: behind the local nginx, uvicorn's proxy-header handling has already put
  X-Forwarded-For's address in its place. An anonymous client on loopback is the host's operator
  and may use the admin routes. In `loopback` mode the request must also address the engine by a
  loopback name (`localhost`, `*.localhost`, a loopback address) or the host's own name: a hostile
  site whose name was made to resolve to 127.0.0.1 (DNS rebinding) sends its own name as Host,
  and a browser never lets a page choose Host.

Clients cannot claim identities: a `user` field that names someone else than the caller is refused.
`allowed_users`, when not empty, is the complete list of users who may talk to the assistant.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass
from ipaddress import ip_address, ip_network

import jwt
from starlette.requests import HTTPConnection

from ..errors import ApiError
from ..settings import SecuritySettings
from .keys import PREFIX, KeyStore

ANONYMOUS = "anonymous"
USER_PATTERN = r"^[\w.@+:-]{1,128}$"
VALID_USER = re.compile(USER_PATTERN)
_ALL = frozenset({"chat", "history", "admin"})
_JWT_DEFAULT_SCOPES = frozenset({"chat", "history"})
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Caller:
    user: str
    scopes: frozenset[str]
    via: str  # "anonymous", "jwt" or "key:<id>": for logs and the audit trail

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "127.0.0.1" or host == "::1":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str | None) -> str | None:
    """The name in a Host header, lower case, without port, brackets or a final dot."""
    if not header:
        return None
    name = header.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return name.rstrip(".")


def is_loopback_name(name: str | None, own: str) -> bool:
    """Whether a request addressed to `name` can only come from this host's own client: loopback
    names and addresses, and the host's own name (`own`). No name at all: not a browser."""
    if name is None:
        return True
    return name == "localhost" or name.endswith(".localhost") or name == own or is_loopback(name)


class Auth:
    def __init__(self, security: SecuritySettings, secrets: dict[str, str], keys: KeyStore | None) -> None:
        self.security = security
        self.keys = keys
        self.allowed = frozenset(security.allowed_users)
        self._jwt = _JwtVerifier(security, secrets) if security.jwt_configured else None
        self._metrics_networks = [ip_network(n) for n in security.metrics_allow_networks]
        self._own_name = socket.gethostname().lower()

    def caller(self, connection: HTTPConnection) -> Caller:
        """The caller of this request or websocket handshake; raises a 401 ApiError."""
        cached = connection.scope.get("state", {}).get("caller")
        if cached is not None:
            return cached
        caller = self._identify(connection)
        connection.scope.setdefault("state", {})["caller"] = caller
        return caller

    def _identify(self, connection: HTTPConnection) -> Caller:
        header = connection.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise ApiError(401, "unauthorized", "use Authorization: Bearer <key or token>", _CHALLENGE)
            if token.startswith(PREFIX):
                key = self.keys.verify(token) if self.keys is not None else None
                if key is None:
                    raise ApiError(401, "unauthorized", "unknown, expired or revoked API key", _CHALLENGE)
                return Caller(key.user, frozenset(key.scopes), f"key:{key.id}")
            if self._jwt is None:
                raise ApiError(401, "unauthorized", "not an API key (sk-ast-...), and JWT is off", _CHALLENGE)
            return self._jwt.caller(token)
        host = connection.client.host if connection.client else None
        mode = self.security.anonymous
        if mode == "anywhere":
            return Caller(ANONYMOUS, _ALL if is_loopback(host) else _JWT_DEFAULT_SCOPES, "anonymous")
        if mode == "loopback" and is_loopback(host):
            name = host_name(connection.headers.get("host"))
            if is_loopback_name(name, self._own_name):
                return Caller(ANONYMOUS, _ALL, "anonymous")
            raise ApiError(
                401,
                "unauthorized",
                f"without a key, address this host as localhost or 127.0.0.1, not {name!r}; or send an API key",
                _CHALLENGE,
            )
        raise ApiError(401, "unauthorized", "an API key is required: Authorization: Bearer sk-ast-...", _CHALLENGE)

    def user(self, connection: HTTPConnection, claimed: str | None, scope: str = "chat") -> str:
        """The user for this request, who must hold `scope`; raises 401/403/400 as an ApiError.
        `claimed` (a body's or query's `user`) may only name the caller themself."""
        caller = self.caller(connection)
        if not caller.has(scope):
            raise ApiError(403, "forbidden", f"this key or token lacks the {scope!r} scope")
        if claimed is not None and claimed != caller.user:
            if caller.via == "anonymous":
                raise ApiError(403, "forbidden", "without a key there is one user: remove 'user' or send an API key")
            raise ApiError(403, "forbidden", "'user' may only name the authenticated user")
        if not VALID_USER.match(caller.user):
            raise ApiError(400, "invalid_user", "user must be 1-128 letters, digits or . @ + : - _")
        if self.allowed and caller.user not in self.allowed:
            raise ApiError(403, "forbidden", "this user may not use the assistant")
        return caller.user

    def admin(self, connection: HTTPConnection) -> str:
        """The admin's name for the audit log; raises 401/403 for anyone else."""
        caller = self.caller(connection)
        if not caller.has("admin"):
            raise ApiError(403, "forbidden", "admin routes need the admin scope (or a client on the host itself)")
        if caller.via == "anonymous":
            return f"local@{connection.client.host if connection.client else '-'}"
        return caller.user

    def may_read_metrics(self, connection: HTTPConnection) -> bool:
        """Monitoring networks (security.metrics_allow_networks) without credentials, admins from anywhere."""
        host = connection.client.host if connection.client else None
        try:
            address = ip_address(host) if host else None
        except ValueError:
            address = None
        if address is not None and any(address in network for network in self._metrics_networks):
            return True
        return connection.headers.get("authorization") is not None and self.caller(connection).has("admin")


class _JwtVerifier:
    """HS* with a shared secret, RS256/ES256 with a PEM public key or a JWKS document."""

    def __init__(self, security: SecuritySettings, secrets: dict[str, str]) -> None:
        self.security = security
        self.key: object | None = None
        self.jwks: jwt.PyJWKSet | None = None
        name = security.jwt_secret or security.jwt_public_key_secret or security.jwt_jwks_secret
        value = secrets.get(name or "")
        if not value:
            raise RuntimeError(f"JWT is enabled but secret {name!r} is not in the secrets file")
        if security.jwt_jwks_secret:
            self.jwks = jwt.PyJWKSet.from_json(value if value.lstrip().startswith("{") else json.dumps(value))
        else:
            self.key = value

    def _key(self, token: str) -> object:
        if self.jwks is None:
            return self.key
        kid = jwt.get_unverified_header(token).get("kid")
        keys = [k for k in self.jwks.keys if kid is None or k.key_id == kid]
        if not keys:
            raise jwt.InvalidTokenError("no key in the JWKS matches the token's kid")
        return keys[0].key

    def caller(self, token: str) -> Caller:
        security = self.security
        leeway = security.jwt_leeway_seconds
        try:
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=[security.jwt_algorithm],
                issuer=security.jwt_issuer,
                audience=security.jwt_audience,
                leeway=leeway,
                options={"require": ["sub", "exp"], "verify_aud": security.jwt_audience is not None},
            )
        except (jwt.PyJWTError, ValueError) as exc:
            raise ApiError(401, "unauthorized", f"invalid token: {exc}", _CHALLENGE) from None
        lifetime = security.jwt_max_lifetime_seconds
        exp, iat = claims["exp"], claims.get("iat")
        if exp - time.time() > lifetime + leeway or (isinstance(iat, int | float) and exp - iat > lifetime):
            raise ApiError(401, "unauthorized", f"the token lives longer than {lifetime} s", _CHALLENGE)
        return Caller(str(claims["sub"]), _jwt_scopes(claims), "jwt")


def _jwt_scopes(claims: dict) -> frozenset[str]:
    named = claims.get("scope", claims.get("scopes"))
    if isinstance(named, str):
        scopes = frozenset(named.split()) & _ALL
    elif isinstance(named, list):
        scopes = frozenset(s for s in named if isinstance(s, str)) & _ALL
    else:
        scopes = _JWT_DEFAULT_SCOPES
    return scopes | {"admin"} if claims.get("admin") is True else scopes
