"""`security:` who may chat, TLS, and how data is kept."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..types import IPNetwork, SafePath, SecretRef
from .base import Strict


class Jwt(Strict):
    """Tokens from an identity provider: `sub` is the user, `scope` (space-separated) or `scopes` the
    scopes (chat, history, admin; chat and history when absent), `exp` is required."""

    enabled: bool = Field(False, description="Accept bearer tokens from an identity provider.")
    algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = Field(
        "HS256", description="HS*: a shared secret; RS256/ES256: the issuer's public key or JWKS."
    )
    secret: SecretRef | None = Field(None, description="The shared HMAC secret (HS* algorithms).")
    public_key: SecretRef | None = Field(
        None, description="The issuer's PEM public key (RS256/ES256), e.g. ${file:keys/issuer.pub}."
    )
    jwks: SecretRef | None = Field(
        None, description="A JWKS document of the issuer's keys (RS256/ES256), e.g. ${file:jwks.json}; picked by kid."
    )
    issuer: str | None = Field(None, max_length=200, description="Required `iss` claim, when set.")
    audience: str | None = Field(None, max_length=200, description="Required `aud` claim, when set.")
    max_lifetime_seconds: int = Field(
        86_400, ge=60, le=31_536_000, description="Tokens whose `exp` lies further ahead (or after `iat`) are refused."
    )
    leeway_seconds: int = Field(30, ge=0, le=600, description="Clock skew allowed on exp, nbf and iat.")

    @model_validator(mode="after")
    def _key_when_enabled(self) -> Jwt:
        if not self.enabled:
            return self
        if self.algorithm.startswith("HS"):
            if self.secret is None:
                raise ValueError("jwt is enabled but has no secret: add secret: ${env:JWT_SECRET}")
        elif (self.public_key is None) == (self.jwks is None):
            raise ValueError(f"jwt with {self.algorithm} needs exactly one of public_key or jwks")
        return self


class Tls(Strict):
    enabled: bool = Field(False, description="Serve HTTPS on ports.https; plain HTTP then redirects to it.")
    certificate: SafePath | None = Field(
        None, description="PEM certificate chain on the edge hosts; required when enabled."
    )
    key: SafePath | None = Field(None, description="PEM private key on the edge hosts; required when enabled.")
    hsts: bool = Field(True, description="Send Strict-Transport-Security, so browsers keep to HTTPS.")

    @model_validator(mode="after")
    def _files_when_enabled(self) -> Tls:
        if self.enabled and not (self.certificate and self.key):
            raise ValueError("tls is enabled: set both certificate and key")
        return self


class HistoryKey(Strict):
    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Stored beside every record this key seals; never reuse an id for another key.",
    )
    key: SecretRef = Field(description="A Fernet key (or any secret, stretched to one).")


class HistoryEncryption(Strict):
    enabled: bool = Field(False, description="Encrypt stored conversation history.")
    key: SecretRef | None = Field(None, description="One key; `keys` instead to rotate keys.")
    keys: list[HistoryKey] = Field(
        default_factory=list,
        description="The keyring, current key first: new records are sealed with it, and records sealed "
        "with the others are re-sealed with it in the background (GET /admin/v1/history/keys shows "
        "progress); drop an old key once none of its records remain.",
    )

    @model_validator(mode="after")
    def _key_when_enabled(self) -> HistoryEncryption:
        if self.key is not None and self.keys:
            raise ValueError("history encryption: set key or keys, not both")
        if self.enabled and self.key is None and not self.keys:
            raise ValueError("history encryption is enabled but has no key: add key: ${env:HISTORY_KEY}")
        ids = [k.id for k in self.keys]
        if len(ids) != len(set(ids)):
            raise ValueError("history encryption: every key needs an id of its own")
        return self


class PiiMasking(Strict):
    enabled: bool = Field(False, description="Mask personal data of the kinds listed.")
    kinds: list[Literal["email", "phone", "credit_card", "ip_address", "cn_resident_id"]] = Field(
        default_factory=lambda: ["email", "phone", "credit_card"],
        description=(
            "What is masked in stored history and log lines (a log line's user, when it is PII, becomes a keyed "
            "pseudonym u:<12 hex>): email; phone (7-15 digits); credit_card (13-19 digits passing the Luhn "
            "check); ip_address (IPv4); cn_resident_id (Chinese resident ID: 17 digits and a MOD 11-2 check "
            "digit 0-9 or X, with a valid birth date)."
        ),
    )
    before_model: bool = Field(
        False,
        description=(
            "Also hide these kinds from the upstream model: each value becomes a placeholder such as [email_1] "
            "and the model's reply gets the real values back before the user sees it or it is stored."
        ),
    )


class Audit(Strict):
    enabled: bool = Field(True, description="Write admin actions and history access to logs/audit.log.")


class Security(Strict):
    anonymous: Literal["loopback", "anywhere", "off"] = Field(
        "loopback",
        description="Who may chat without an API key or token, as the one anonymous user: clients on the host "
        "itself (loopback, the default), every client (anywhere: an explicit choice, flagged by plan), or nobody.",
    )
    jwt: Jwt = Field(Jwt(), description="Users identified by bearer tokens; off by default.")
    edge_secret: SecretRef | None = Field(
        None,
        description="Shared by the edges and the engine-only hosts: nginx sends it with every request, and an "
        "engine-only host admits only its edges' addresses holding it. Required when a host has the engine role "
        "without the edge role.",
    )
    tls: Tls = Field(Tls(), description="HTTPS at the edge; off by default.")
    allowed_users: list[str] = Field(default_factory=list, description="Empty: everyone may chat.")
    allowed_networks: list[IPNetwork] = Field(
        default_factory=list, description="Source networks nginx admits; empty: all."
    )
    history_encryption: HistoryEncryption = Field(
        HistoryEncryption(), description="Stored history sealed with Fernet keys; off by default."
    )
    history_retention_days: int | None = Field(
        None,
        ge=1,
        le=36_500,
        description="Delete conversation history older than this many days (checked hourly and at start); "
        "unset keeps it forever.",
    )
    pii_masking: PiiMasking = Field(
        PiiMasking(), description="Personal data masked in history and logs; off by default."
    )
    audit: Audit = Field(Audit(), description="The audit log; on by default.")
