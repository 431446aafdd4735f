"""The whole of assistant.yaml, one field per section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr

from ..types import Name
from .base import Strict
from .channels import Channels
from .deploy import Deploy
from .kubernetes import Kubernetes
from .limits import Limits
from .models import Models
from .monitoring import Monitoring
from .security import Security
from .tools import Tools


class Spec(Strict):
    """assistant.yaml: everything about one assistant deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, title="assistant.yaml")

    version: Literal[2] = Field(
        description="Version of this file's format: 2. An older file still loads, with a warning; "
        "`assistantctl migrate --write` rewrites it."
    )
    name: Name = Field(
        "assistant", description="The deployment's name: in metrics, alerts and /opt/<name> on SSH hosts."
    )
    models: Models = Field(description="The language models and which one answers.")
    channels: Channels = Field(Channels(), description="Where users reach the assistant; web and websocket by default.")
    tools: Tools = Field(Tools(), description="What the assistant can use beyond the model: its skills.")
    limits: Limits = Field(Limits(), description="Rate limits, budgets, timeouts and concurrency.")
    monitoring: Monitoring = Field(Monitoring(), description="Metrics, alerts and logs.")
    security: Security = Field(Security(), description="Who may chat, TLS, and how data is kept.")
    deploy: Deploy = Field(Deploy(), description="Hosts, ports and how a change is rolled out.")
    kubernetes: Kubernetes = Field(
        Kubernetes(), description="The engine on a Kubernetes cluster: manifests `render` writes, never applied."
    )

    # The folders of tools.skill_folders as read and checked by the loader (schema/skill_folders.py):
    # their files are part of what is rendered, like the spec's own values.
    _skill_folders: tuple[Any, ...] = PrivateAttr(default=())

    # The custom adapters' modules found in the spec's folder (schema/adapter_modules.py): shipped too.
    _adapter_modules: tuple[Any, ...] = PrivateAttr(default=())

    @property
    def loaded_skill_folders(self) -> tuple[Any, ...]:
        """Each `SkillFolder` of tools.skill_folders, in order (empty for a spec not read from a file)."""
        return self._skill_folders

    @property
    def loaded_adapter_modules(self) -> tuple[Any, ...]:
        """Each `AdapterModule` a custom model's class lives in, when the spec's folder holds it."""
        return self._adapter_modules
