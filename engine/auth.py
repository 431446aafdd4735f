"""Who is asking: a verified JWT subject when a JWT secret is configured, else the claimed user.

`allowed_users`, when not empty, is the complete list of users who may talk to the assistant.
Admin endpoints accept callers on the host itself (loopback; uvicorn has already replaced the
address with X-Forwarded-For's when the request came through the local proxy) or, with JWT, a
token whose `admin` claim is true.
"""

from __future__ import annotations

import re
from ipaddress import ip_address

import jwt
from starlette.requests import Request

from .errors import ApiError
from .settings import SecuritySettings

ANONYMOUS = "anonymous"
_USER = re.compile(r"^[\w.@+-]{1,128}$")


class Auth:
    def __init__(self, security: SecuritySettings, secrets: dict[str, str]) -> None:
        self.security = security
        self.key: str | None = None
        if security.jwt_secret:
            self.key = secrets.get(security.jwt_secret)
            if not self.key:
                raise RuntimeError(f"JWT is enabled but secret {security.jwt_secret!r} is not in the secrets file")
        self.allowed = frozenset(security.allowed_users)

    def claims(self, request: Request) -> dict | None:
        if self.key is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "a Bearer token is required", {"WWW-Authenticate": "Bearer"})
        try:
            return jwt.decode(
                token.strip(),
                self.key,
                algorithms=[self.security.jwt_algorithm],
                issuer=self.security.jwt_issuer,
                audience=self.security.jwt_audience,
                options={"require": ["sub"], "verify_aud": self.security.jwt_audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise ApiError(401, "unauthorized", f"invalid token: {exc}", {"WWW-Authenticate": "Bearer"}) from None

    def user(self, request: Request, claimed: str | None) -> str:
        """The user for this request; raises 401/403/400 as an ApiError."""
        claims = self.claims(request)
        user = str(claims["sub"]) if claims is not None else (claimed or ANONYMOUS)
        if not _USER.match(user):
            raise ApiError(400, "invalid_user", "user must be 1-128 letters, digits or . @ + - _")
        if self.allowed and user not in self.allowed:
            raise ApiError(403, "forbidden", "this user may not use the assistant")
        return user

    def admin(self, request: Request) -> str:
        """The admin's name for the audit log; raises 403 for anyone else."""
        if self.key is not None and request.headers.get("authorization"):
            claims = self.claims(request) or {}
            if claims.get("admin") is True:
                return str(claims["sub"])
            raise ApiError(403, "forbidden", "the token has no admin claim")
        host = request.client.host if request.client else ""
        try:
            if ip_address(host).is_loopback:
                return f"local@{host}"
        except ValueError:
            pass
        raise ApiError(403, "forbidden", "admin endpoints are only open on the host itself or with an admin token")
