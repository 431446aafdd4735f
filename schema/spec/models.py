"""`models:` the language models and which one answers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, HttpUrl, JsonValue, WithJsonSchema, model_validator

from ...engine.settings import CLASS_PATH_PATTERN
from ..types import Name, PositiveSeconds, SecretRef
from .base import Strict

Provider = Literal["builtin", "openai", "anthropic", "ollama", "custom"]
# Any value YAML and JSON share (text, number, boolean, null, list, mapping); published as "any"
# rather than as pydantic's recursive JsonValue definition, an empty section in docs/spec.md.
ParamValue = Annotated[JsonValue, WithJsonSchema({"description": "Text, number, true/false, null, list or mapping."})]


class ModelSpec(Strict):
    provider: Provider = Field(
        description="Adapter used to talk to this model; 'custom': your own adapter class, named by `class`."
    )
    model: str | None = Field(None, max_length=200, description="Upstream model id; defaults to the key.")
    api_base: HttpUrl | None = Field(None, description="Base URL of the provider's API.")
    api_key: SecretRef | None = Field(
        None, description="The provider's API key as ${env:NAME} or ${file:path}; required by anthropic."
    )
    connect_timeout_seconds: PositiveSeconds = Field(5, description="Seconds to open a connection to the provider.")
    read_timeout_seconds: PositiveSeconds = Field(
        60, description="Seconds to wait for the provider's next bytes before the call fails (and falls back)."
    )
    max_concurrency: int = Field(64, ge=1, le=100_000, description="In-flight calls to this model.")
    requests_per_minute: int | None = Field(
        None,
        ge=1,
        description="Upstream quota for this model: requests per minute from the whole deployment (every "
        "user, worker and node together); past it requests for this model get 429 with Retry-After.",
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        description="Upstream quota for this model in tokens (input + output) per minute, deployment-wide. "
        "A call is admitted while any are left and charged its real usage afterwards.",
    )
    max_tokens: int | None = Field(None, ge=1, description="Cap on tokens in a reply; unset: the provider's own.")
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature, 0 (repeatable) to 2; unset: the provider's default."
    )
    input: list[Literal["text", "image"]] = Field(
        default_factory=lambda: ["text"],
        min_length=1,
        description="What the model reads: 'text', plus 'image' for a model that takes images (vision). "
        "Photos sent to a chat channel go to a model with 'image' (the largest size under 5 MB, with the "
        "caption); a model without it answers them with a polite refusal. Text files (text/*, JSON, up to "
        "200 KB) are read by every model.",
    )
    class_path: str | None = Field(
        None,
        alias="class",
        pattern=CLASS_PATH_PATTERN,
        description="provider 'custom': the adapter class, as 'package.module:ClassName' or "
        "'package.module.ClassName'. `validate` imports it (the spec's folder first on the import path) and "
        "checks it has `async def chat(messages, opts)` and an async generator `stream(messages, opts)` and "
        "is built as `ClassName(params)`. The engine imports it too: the module must be installed where the "
        "engine runs. See examples/adapters/.",
    )
    params: dict[str, ParamValue] | None = Field(
        None,
        description="provider 'custom': options the class is built with, checked against its `Params` pydantic "
        "model when it has one. A top-level value may be a secret reference (${env:NAME} or ${file:path}): it "
        "goes to the engine's secrets file, never into its settings; other values are written as they are.",
    )

    @model_validator(mode="after")
    def _provider_needs(self) -> ModelSpec:
        if self.provider == "anthropic" and self.api_key is None:
            raise ValueError("provider 'anthropic' needs api_key: ${env:ANTHROPIC_API_KEY}")
        if self.provider == "builtin" and (self.api_base or self.api_key):
            raise ValueError("provider 'builtin' runs offline: remove api_base and api_key")
        if self.provider != "custom" and (self.class_path is not None or self.params is not None):
            raise ValueError("'class' and 'params' are for provider 'custom' only")
        if self.provider == "custom" and self.class_path is None:
            raise ValueError("provider 'custom' needs class: package.module:ClassName")
        if "text" not in self.input:
            raise ValueError("input must include 'text': every model is given the chat's text")
        if self.provider == "builtin" and "image" in self.input:
            raise ValueError("provider 'builtin' reads no images: remove 'image' from input")
        if self.provider == "custom" and (self.api_base or self.api_key):
            raise ValueError("provider 'custom' takes no api_base or api_key: put what the class needs in params")
        return self


class Models(Strict):
    default: Name = Field(description="Model that answers unless a channel names another.")
    fallback: list[Name] = Field(default_factory=list, description="Tried in order when a call fails.")
    providers: dict[Name, ModelSpec] = Field(
        min_length=1, description="The models, by the name channels and `default` use for them; at least one."
    )
