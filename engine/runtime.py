"""Everything one worker holds while it runs, and the two ways it changes at run time.

- `reload()` (SIGHUP with one worker) re-reads the settings and secrets files and swaps in a new
  model catalog; requests already running keep the catalog they started with.
- `switch_default(name)` (the admin endpoint) swaps in a catalog with another default model, and
  writes `<data_dir>/default-model.json` so the other workers (which poll it every second) follow.
  The override holds until the settings file changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from . import logs, storage
from .history.retention import Upkeep
from .limits.policy import Limits
from .models.adapters.custom import use_adapter_code
from .models.catalog import Catalog, build_catalog
from .models.router import Router
from .models.upstream import ClientPool
from .security.auth import Auth
from .security.crypto import keyring
from .security.pii import Masker, pseudonym_key
from .settings import EngineSettings, load_secrets, restart_fields
from .skills.folders import SkillFolders, load_skill_folders
from .skills.plugins import load_skills
from .tools import Registry, load_registry
from .tools.registry import ToolSource

OVERRIDE_FILE = "default-model.json"
_POLL_SECONDS = 1.0


class Runtime:
    def __init__(self, settings_path: str) -> None:
        self.settings_path = settings_path
        self.settings_digest, self.settings = _read(settings_path)
        self.secrets = load_secrets(self.settings)
        self.secrets_digest = _file_digest(self.settings.secrets_file)
        kinds = self.settings.security.pii_masking
        self.masker = Masker(kinds, pseudonym_key(self.settings.data_dir) if kinds else None)
        self.keys = storage.keys(self.settings, self.secrets)
        self.auth = Auth(self.settings.security, self.secrets, self.keys)
        self.clients = ClientPool()
        use_adapter_code(self.settings.adapter_code)
        self.catalog: Catalog = build_catalog(self.settings, self.secrets, self.clients)
        self.router = Router(self.settings.retries, self.settings.retry_backoff_seconds)
        self.skills = load_skills(self.settings.skills)
        # MCP servers connect in the background once started; their tools join the registry as they answer
        self.mcp = _mcp_servers(self.settings, self.secrets)
        # Skill folders' handlers are imported once per worker (new code needs new workers: RESTART_ONLY)
        self.skill_folders: SkillFolders = load_skill_folders(self.settings.skill_folders)
        # A request keeps the registry it started with.
        self.tools: Registry = load_registry(self.settings.tools, sources=self._tool_sources())
        self.limits = Limits(storage.limiter(self.settings, self.secrets))
        self.history_keys = keyring(self.settings.security, self.secrets)
        self.history = storage.history(self.settings, self.secrets, self.history_keys, self.masker)
        # Retention and key rotation, in the background (one worker of the deployment at a time).
        self.upkeep = Upkeep(self.history.lifecycle, self.history_keys, self.settings.security.history_retention_days)
        self.in_flight = 0
        self._override_mtime: float | None = None
        self._poller: asyncio.Task[None] | None = None

    @property
    def override_path(self) -> Path:
        return Path(self.settings.data_dir) / OVERRIDE_FILE

    async def start(self) -> None:
        logs.setup(
            self.settings.log_dir,
            self.settings.log_level,
            self.settings.log_format,
            self.settings.security.audit_log,
            self.masker,
        )
        await self.history.open()
        storage.approvals(self.settings, self.history)
        self.upkeep.start()
        await self.keys.start()
        await self.mcp.start()  # returns at once: a server that is down never delays the engine
        self._apply_override()
        self._poller = asyncio.create_task(self._poll_override())
        logs.event(
            logs.APP,
            logging.INFO,
            f"engine started pid={os.getpid()} models={','.join(self.catalog.names())} "
            f"default={self.catalog.default} transport={self.clients.transport_name}",
        )

    async def stop(self) -> None:
        if self._poller:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await self.keys.stop()
        await self.upkeep.stop()
        await self.history.close()
        await self.limits.aclose()
        await self.mcp.close()  # ends the stdio servers this worker started
        await self.clients.aclose()
        logs.event(logs.APP, logging.INFO, f"engine stopped pid={os.getpid()}")
        logs.stop()

    def reload(self) -> None:
        """Re-read settings and secrets; a file that fails to load leaves everything as it was."""
        try:
            digest, settings = _read(self.settings_path)
            secrets = load_secrets(settings)
            secrets_digest = _file_digest(settings.secrets_file)
            catalog = build_catalog(settings, secrets, self.clients, previous=self.catalog)
            auth = Auth(settings.security, secrets, self.keys)
            skills = load_skills(settings.skills)
            tools = load_registry(settings.tools, sources=self._tool_sources())  # servers, skills: on restart
        except Exception as exc:  # noqa: BLE001 - a bad file must never take a running engine down
            logs.event(logs.APP, logging.ERROR, f"reload failed, keeping the running settings: {exc}")
            return
        restart_only = restart_fields(self.settings, settings)
        if restart_only:
            logs.event(logs.APP, logging.WARNING, f"reload: {', '.join(restart_only)} change only on restart")
        self.settings, self.settings_digest, self.secrets, self.catalog = settings, digest, secrets, catalog
        self.secrets_digest = secrets_digest
        self.router = Router(settings.retries, settings.retry_backoff_seconds)
        self.auth = auth
        self.skills = skills
        self.tools = tools
        self._override_mtime = None
        self._apply_override()
        logs.event(
            logs.APP,
            logging.INFO,
            f"settings reloaded models={','.join(catalog.names())} default={self.catalog.default}",
        )

    def _tool_sources(self) -> list[ToolSource]:
        sources: list[ToolSource] = [self.mcp] if self.settings.tools.mcp_servers else []
        return [*sources, self.skill_folders] if self.skill_folders.skills else sources

    def switch_default(self, name: str) -> str:
        """Make `name` the default model for new requests here and in the other workers."""
        previous = self.catalog.default
        self.catalog = self.catalog.with_default(name)
        self.override_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.override_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"model": name, "settings_sha256": self.settings_digest}))
        tmp.replace(self.override_path)
        self._override_mtime = self.override_path.stat().st_mtime
        return previous

    def _apply_override(self) -> None:
        try:
            stat = self.override_path.stat()
        except FileNotFoundError:
            return
        if stat.st_mtime == self._override_mtime:
            return
        self._override_mtime = stat.st_mtime
        with suppress(ValueError, OSError, KeyError):
            data = json.loads(self.override_path.read_text())
            name = data["model"]
            current = data["settings_sha256"] == self.settings_digest
            if current and name in self.catalog.entries and name != self.catalog.default:
                self.catalog = self.catalog.with_default(name)

    async def _poll_override(self) -> None:
        while True:
            await asyncio.sleep(_POLL_SECONDS)
            try:
                self._apply_override()
            except Exception as exc:  # noqa: BLE001 - never let the poller die
                logs.event(logs.APP, logging.WARNING, f"default-model override unreadable: {exc}")


def _file_digest(path: str | None) -> str | None:
    """The sha256 of the secrets file as loaded (None without one): what /health tells a deploy."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except FileNotFoundError:
        return None


class _NoMcpServers:
    """The MCP manager of an engine without `tools.mcp_servers`: the SDK (~50 MB per worker) is
    imported only by engines that declare a server."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def tools(self) -> dict:
        return {}


def _mcp_servers(settings: EngineSettings, secrets: dict[str, str]) -> Any:
    if not settings.tools.mcp_servers:
        return _NoMcpServers()
    from .tools.mcp import McpManager

    return McpManager(settings.tools.mcp_servers, secrets)


def _read(path: str) -> tuple[str, EngineSettings]:
    raw = Path(path).read_bytes()
    return hashlib.sha256(raw).hexdigest(), EngineSettings.model_validate_json(raw)
