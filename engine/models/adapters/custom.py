"""`provider: custom`: a model adapter class the user wrote, named by its class path.

The class comes from the release when its module sat next to the spec (`settings.adapter_code`:
the shipped folder goes first on the worker's import path, and changed code rolls the workers),
otherwise from the engine's own environment (installed there, or on its PYTHONPATH). The engine
imports it when it builds the catalog, at start-up and on a reload whose settings changed, and
builds it as `cls(params)`. `params` is the settings'
params plus the secret ones read from the secrets file, validated by the class's `Params` model
when it declares one. The contract is `settings.adapter_class_problems`; `assistantctl validate`
checks it on the controller. A changed installed module takes effect on a restart, not a reload:
Python keeps the module it imported.

The class is trusted code but not trusted to keep the router's rules, so every call goes through
`CustomAdapter`, which
- fills `CallOptions.max_tokens` / `temperature` from the model's settings when the call has none;
- bounds the call by `read_timeout_seconds` (all of `chat`; each step of `stream`), a timeout
  being a retryable `UpstreamError`;
- turns any other exception into a non-retryable `UpstreamError` naming its type, so the router
  records it and falls back instead of answering 500;
- checks that `chat` returns a `Reply` and `stream` yields lists of `Chunk`.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import replace
from typing import Any

from pydantic import BaseModel

from ...settings import AdapterCodeSettings, ModelSettings, adapter_class_problems, split_class_path
from .base import CallOptions, Chunk, Message, Reply, UpstreamError


def use_adapter_code(code: AdapterCodeSettings | None) -> None:
    """Put the release's adapter folder first on this worker's import path."""
    if code is not None and code.path not in sys.path:
        sys.path.insert(0, code.path)


def load_adapter_class(path: str) -> type:
    """Import the class `path` names; raises ValueError saying what is wrong with it."""
    module_name, name = split_class_path(path)
    module = importlib.import_module(module_name)
    cls = getattr(module, name)
    problems = adapter_class_problems(cls)
    if problems:
        raise ValueError(f"{path} does not implement the adapter interface: {'; '.join(problems)}")
    return cls


def build_params(cls: type, params: dict[str, Any]) -> Any:
    """What the constructor gets: the `Params` model's instance when the class declares one."""
    model = getattr(cls, "Params", None)
    return model.model_validate(params) if isinstance(model, type) and issubclass(model, BaseModel) else params


class CustomAdapter:
    def __init__(self, settings: ModelSettings, secrets: dict[str, str], clients: object) -> None:
        self.name = settings.name
        self.settings = settings
        self.path = settings.adapter_class or ""
        params = {**settings.params, **{key: secrets.get(entry, "") for key, entry in settings.param_secrets.items()}}
        try:
            cls = load_adapter_class(self.path)
            self.impl = cls(build_params(cls, params))
        except Exception as exc:  # noqa: BLE001 - reported with the model's name, at start-up
            raise ValueError(f"model '{self.name}' ({self.path}) cannot be built: {_describe(exc)}") from exc

    def _opts(self, opts: CallOptions) -> CallOptions:
        return replace(
            opts,
            max_tokens=opts.max_tokens or self.settings.max_tokens,
            temperature=opts.temperature if opts.temperature is not None else self.settings.temperature,
        )

    async def chat(self, messages: list[Message], opts: CallOptions) -> Reply:
        with self._errors():
            async with asyncio.timeout(self.settings.read_timeout_seconds):
                reply = await self.impl.chat(messages, self._opts(opts))
        if not isinstance(reply, Reply):
            raise UpstreamError(f"{self.path}.chat returned {type(reply).__name__}, not a Reply", retryable=False)
        return reply

    async def stream(self, messages: list[Message], opts: CallOptions) -> AsyncIterator[list[Chunk]]:
        async with aclosing(self.impl.stream(messages, self._opts(opts))) as chunks:
            while True:
                with self._errors():
                    async with asyncio.timeout(self.settings.read_timeout_seconds):
                        try:
                            item = await anext(chunks)
                        except StopAsyncIteration:
                            return
                if not isinstance(item, list) or not all(isinstance(chunk, Chunk) for chunk in item):
                    raise UpstreamError(
                        f"{self.path}.stream yielded {type(item).__name__}, not a list of Chunk", retryable=False
                    )
                if item:  # the router's streams never carry an empty list
                    yield item

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Maps what the class raises onto the router's error kinds (see the module docstring);
        a cancellation (a BaseException) passes as it is."""
        try:
            yield
        except UpstreamError:
            raise
        except TimeoutError as exc:
            seconds = self.settings.read_timeout_seconds
            raise UpstreamError(f"{self.path} gave nothing for {seconds:g}s", retryable=True, timeout=True) from exc
        except Exception as exc:
            raise UpstreamError(f"{self.path} failed: {_describe(exc)}", retryable=False) from exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
