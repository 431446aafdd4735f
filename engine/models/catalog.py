"""The declared models at one moment: adapters, breakers and gates, plus default and fallback.

A catalog is never changed in place. A reload or a default-model switch builds a new one and
swaps the reference; requests already running keep the catalog they started with, so they finish
on the old model. Models whose settings did not change keep their breaker, gate and adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..settings import EngineSettings, ModelSettings
from .adapters.base import Adapter
from .adapters.registry import build_adapter
from .breaker import Breaker
from .gate import Gate
from .upstream import ClientPool


class UnknownModel(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ModelEntry:
    settings: ModelSettings
    secret: tuple[str | None, ...]  # the secret values it was built with (`_secrets_of`)
    adapter: Adapter
    breaker: Breaker
    gate: Gate

    @property
    def name(self) -> str:
        return self.settings.name


@dataclass(frozen=True, slots=True)
class Catalog:
    entries: dict[str, ModelEntry]
    default: str
    fallback: tuple[str, ...]

    def names(self) -> list[str]:
        return list(self.entries)

    def chain(self, requested: str | None = None) -> list[ModelEntry]:
        """The models to try, in order: the requested (or default) one, then the fallback list."""
        first = requested or self.default
        if first not in self.entries:
            raise UnknownModel(first)
        order = [first, *(name for name in self.fallback if name != first)]
        return [self.entries[name] for name in order if name in self.entries]

    def with_default(self, name: str) -> Catalog:
        if name not in self.entries:
            raise UnknownModel(name)
        return replace(self, default=name)

    def ready(self) -> bool:
        return any(entry.breaker.available() for entry in self.entries.values())


def build_catalog(
    settings: EngineSettings, secrets: dict[str, str], clients: ClientPool, previous: Catalog | None = None
) -> Catalog:
    entries: dict[str, ModelEntry] = {}
    for model in settings.models:
        secret = _secrets_of(model, secrets)
        old = previous.entries.get(model.name) if previous else None
        if old is not None and old.settings == model and old.secret == secret:
            entries[model.name] = old
            continue
        entries[model.name] = ModelEntry(
            settings=model,
            secret=secret,
            adapter=build_adapter(model, secrets, clients),
            breaker=Breaker(model.name, settings.breaker_failure_threshold, settings.breaker_cooldown_seconds),
            gate=Gate(model.max_concurrency, settings.queue_size),
        )
    return Catalog(entries=entries, default=settings.default_model, fallback=tuple(settings.fallback))


def _secrets_of(model: ModelSettings, secrets: dict[str, str]) -> tuple[str | None, ...]:
    """The secret values a model's adapter is built with: a change to any rebuilds it."""
    names = [model.api_key_secret, *model.param_secrets.values()]
    return tuple(secrets.get(name) if name else None for name in names)
