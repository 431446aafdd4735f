"""Model adapters keyed by provider: adding a provider is adding a module and a line here."""

from __future__ import annotations

from ...settings import ModelSettings
from ..upstream import ClientPool
from .anthropic import AnthropicAdapter
from .base import Adapter
from .builtin import BuiltinAdapter
from .custom import CustomAdapter
from .ollama import OllamaAdapter
from .openai import OpenAIAdapter

ADAPTERS: dict[str, type] = {
    "builtin": BuiltinAdapter,
    "openai": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "ollama": OllamaAdapter,
    "custom": CustomAdapter,
}


def build_adapter(settings: ModelSettings, secrets: dict[str, str], clients: ClientPool) -> Adapter:
    return ADAPTERS[settings.provider](settings, secrets, clients)
