"""Constrained scalar types shared by the spec models.

Every string that can reach a rendered config is narrowed here, at the edge, so the renderers can
trust what they get. The renderers still quote through one filter per output language.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, Strict, StringConstraints
from pydantic_core import PydanticCustomError

# A name used as an identifier in configs: model names, channel models, host names, skills.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]

# A filesystem path: no spaces, quotes, semicolons, braces or newlines can get through.
SafePath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./~+-]+$", max_length=4096)]

# A URL path served by nginx, e.g. /webhooks/telegram.
UrlPath = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9_./-]*$", max_length=256)]

# A DNS name or IP literal used as server_name / host address.
HostName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,252})$")]

# nginx's server_name: a DNS name, with a wildcard only as a whole first or last label
# (`*.example.com`, `www.example.*`), the only wildcard forms nginx accepts besides regexes.
ServerName = Annotated[
    str, StringConstraints(pattern=r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63}){0,8}(\.\*)?$")
]


def _text_only(value: object) -> object:
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    return value


# Addresses and networks are text in the published schema. The spec models are strict (no coercion),
# and strict pydantic would take only ipaddress objects, which YAML never produces; lax pydantic
# would also take an integer. So: lax parsing of text only.
IPv4Addr = Annotated[IPv4Address, Strict(False), BeforeValidator(_text_only)]
IPNetwork = Annotated[
    Annotated[IPv4Network, Strict(False)] | Annotated[IPv6Network, Strict(False)], BeforeValidator(_text_only)
]

Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0, le=86400)]
Percent = Annotated[float, Field(gt=0, le=100)]

SECRET_REF = re.compile(r"^\$\{(env|file):([^}\s]+)\}$")


def _check_secret_ref(value: str) -> str:
    if not SECRET_REF.match(value):
        raise ValueError("secret values must be references, not literals: write ${env:NAME} or ${file:/path}")
    return value


# A reference to a secret, resolved on the controller at apply time; the value itself never
# appears in the spec, the rendered configs or plan output.
SecretRef = Annotated[str, AfterValidator(_check_secret_ref)]
