"""Rules that span sections of the spec: each returns (location, message, hint) triples."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..engine.settings import BUILTIN_SKILLS, BUILTIN_TOOLS, adapter_class_problems, split_class_path, top_module
from .adapter_modules import in_spec_folder, shadowed_by
from .spec import Spec
from .spec.models import ModelSpec
from .types import SECRET_REF

Finding = tuple[tuple[str | int, ...], str, str | None]


def cross_check(spec: Spec, spec_dir: Path) -> list[Finding]:
    """Every cross-section problem in a spec that passed the per-field validation. `spec_dir`, the
    spec file's folder, is where custom adapter modules are looked for first."""
    return [
        *_model_references(spec),
        *_port_clashes(spec),
        *_host_references(spec),
        *_skills(spec),
        *_engine_only_hosts(spec),
        *_machine_tools_need_credentials(spec),
        *_central_logs_need_tls(spec),
        *_custom_adapters(spec, spec_dir),
        *_telegram_polling_on_one_engine_host(spec),
    ]


def _custom_adapters(spec: Spec, spec_dir: Path) -> Iterator[Finding]:
    """Import each `provider: custom` class (only the modules named, so `validate` stays fast) and
    check it against the adapter interface and its params against its `Params` model."""
    for name, model in spec.models.providers.items():
        if model.provider != "custom" or model.class_path is None:
            continue
        where = ("models", "providers", name)
        yield from _nested_secrets(where, model.params or {})
        try:
            _shipped_as_imported(model.class_path, spec_dir)
            loaded = set(sys.modules)
            with _import_path(spec_dir):
                cls = _import_class(model.class_path)
            _nothing_left_behind(model.class_path, spec_dir, set(sys.modules) - loaded)
        except _NotAdapter as exc:
            yield (*where, "class", "__key__"), f"{'.'.join(where)}.class: {exc.message}", exc.hint
            continue
        yield from _params_fit(where, model, cls)


def _shipped_as_imported(class_path: str, spec_dir: Path) -> None:
    """A module in the spec's folder is shipped (schema/adapter_modules.py): refused when the
    engine would import another module of that name instead."""
    top = top_module(class_path)
    if in_spec_folder(top, spec_dir) and (other := shadowed_by(top, spec_dir)):
        raise _NotAdapter(
            f"'{top}' is also the name of {other}: the engine would import that one",
            "rename the adapter's module next to the spec",
        )


def _nothing_left_behind(class_path: str, spec_dir: Path, imported: set[str]) -> None:
    """What the adapter imported from the spec's folder must be part of what is shipped: its own
    module or package."""
    top, folder = top_module(class_path), spec_dir.resolve()
    for name in sorted(imported):
        origin, first = getattr(sys.modules.get(name), "__file__", None), name.split(".")[0]
        if first == top or not origin or folder not in Path(origin).resolve().parents:
            continue
        if in_spec_folder(first, spec_dir) and shadowed_by(first, spec_dir) is None:
            raise _NotAdapter(
                f"{class_path} imports '{name}' from the spec's folder, which is not shipped with it",
                f"make {top} a package that holds it",
            )


class _NotAdapter(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@contextmanager
def _import_path(folder: Path) -> Iterator[None]:
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    importlib.invalidate_caches()  # a module written since the folder was last looked at
    try:
        yield
    finally:
        sys.path.remove(entry)


def _import_class(path: str) -> type:
    module_name, attribute = split_class_path(path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            hint = f"put {module_name.replace('.', '/')}.py next to the spec, or install it where assistantctl and "
            raise _NotAdapter(f"module '{module_name}' not found", hint + "the engine run") from None
        raise _NotAdapter(f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module: whatever it raises is the finding
        raise _NotAdapter(f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, attribute, None)
    if cls is None:
        raise _NotAdapter(f"module '{module_name}' has no attribute '{attribute}'")
    if not inspect.isclass(cls):
        raise _NotAdapter(f"'{path}' is a {type(cls).__name__}, not a class")
    problems = adapter_class_problems(cls)
    if problems:
        raise _NotAdapter(
            f"{path} does not implement the adapter interface: {'; '.join(problems)}",
            "see examples/adapters/ for a complete adapter",
        )
    return cls


def _params_fit(where: tuple[str, ...], model: ModelSpec, cls: type) -> Iterator[Finding]:
    params_model = getattr(cls, "Params", None)
    if not (inspect.isclass(params_model) and issubclass(params_model, BaseModel)):
        return
    params = dict(model.params or {})
    secret = {key for key, value in params.items() if isinstance(value, str) and SECRET_REF.match(value)}
    try:
        params_model.model_validate(params)
    except ValidationError as exc:
        for err in exc.errors():
            loc = err["loc"]
            if loc and loc[0] in secret:  # its value is only known on the hosts; the engine checks it
                continue
            in_file = _holds(params, loc)
            dotted = ".".join(map(str, (*where, "params", *(loc if in_file else ()))))
            message = f"'{'.'.join(map(str, loc))}' is required" if err["type"] == "missing" else err["msg"]
            at = (*where, "params", *loc) if in_file else (*where, "params", "__key__")
            yield at, f"{dotted}: params do not fit {model.class_path}.Params: {message}", None


def _holds(data: Any, loc: tuple[str | int, ...]) -> bool:
    """Whether `loc` is a path that exists in `data` (so the file has a position for it)."""
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return False
    return bool(loc)


def _nested_secrets(where: tuple[str, ...], params: dict[str, Any]) -> Iterator[Finding]:
    # The engine fills secret params in by name, so only a top-level value can be one.
    for key, value in params.items():
        if not isinstance(value, str) and any(SECRET_REF.match(text) for text in _strings(value)):
            yield (
                (*where, "params", key, "__key__"),
                f"{'.'.join(where)}.params.{key}: a secret reference must be a top-level value of params",
                f"make it its own param, e.g. {key}_secret: ${{env:NAME}}",
            )


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _machine_tools_need_credentials(spec: Spec) -> Iterator[Finding]:
    """A machine tool runs code on the host (sandboxed): never for callers who showed no credentials.
    Machine tools are never in the `safe` group, so each one on is named in tools.enabled."""
    if spec.security.anonymous != "anywhere":
        return
    for i, name in enumerate(spec.tools.enabled):
        if BUILTIN_TOOLS.get(name) == "machine" and name not in spec.tools.disabled:
            yield (
                ("tools", "enabled", i),
                f"tools.enabled.{i}: {name} is a machine tool and security.anonymous is 'anywhere': "
                "anyone could run it without credentials",
                "set security.anonymous: loopback or off, so callers need a key or a token",
            )


def _central_logs_need_tls(spec: Spec) -> Iterator[Finding]:
    """Logs cross the network to a `logging` host only encrypted: they carry users, routes and errors."""
    elk = spec.monitoring.logging.elk
    central = [h.name for h in spec.deploy.hosts if "logging" in h.roles]
    if elk.enabled and elk.tls is None and central and len(spec.deploy.hosts) > 1:
        yield (
            ("monitoring", "logging", "elk"),
            f"host '{central[0]}' takes the other hosts' logs: Filebeat to Logstash needs TLS",
            "set monitoring.logging.elk.tls: {certificate: ${file:...}, key: ${file:...}}",
        )


def telegram_webhook_url(spec: Spec) -> str | None:
    """The URL Telegram posts updates to: channels.telegram.public_url, else derived from the
    edge's name and HTTPS port when TLS is on and the name is one host; None when neither."""
    telegram = spec.channels.telegram
    if telegram.public_url is not None:
        return str(telegram.public_url)
    name = spec.deploy.server_name
    if not spec.security.tls.enabled or "*" in name or name == "localhost":
        return None
    port = spec.deploy.ports.https
    return f"https://{name}{'' if port == 443 else f':{port}'}{telegram.path}"


def _telegram_polling_on_one_engine_host(spec: Spec) -> Iterator[Finding]:
    """Without a shared history the poller's lock and offset live on its node
    (engine/channels/telegram_poll.py): two engine hosts would poll the same bot, and Telegram would
    hand both the same updates. With the history in PostgreSQL one lease there elects one poller."""
    telegram = spec.channels.telegram
    engines = [h.name for h in spec.deploy.hosts if "engine" in h.roles]
    shared = spec.deploy.state.history == "postgres"
    if telegram.enabled and telegram.mode == "polling" and len(engines) > 1 and not shared:
        yield (
            ("channels", "telegram", "mode"),
            f"channels.telegram.mode 'polling' runs one poller per engine host, and {len(engines)} hosts run "
            f"the engine ({', '.join(engines)}): each update would be answered by each of them",
            "use deploy.state.history: postgres (one poller for the deployment, elected there), or mode: "
            "webhook (Telegram posts each update once, to the edge)",
        )


def _engine_only_hosts(spec: Spec) -> Iterator[Finding]:
    """An engine without an edge of its own listens beyond loopback: only its edges, holding the
    shared secret, may reach it."""
    for i, host in enumerate(spec.deploy.hosts):
        if "engine" in host.roles and "edge" not in host.roles and spec.security.edge_secret is None:
            yield (
                ("deploy", "hosts", i, "roles"),
                f"host '{host.name}' runs the engine without the edge: it would listen beyond loopback unguarded",
                "set security.edge_secret: ${env:EDGE_SECRET} (nginx sends it, the engine requires it)",
            )


def _skills(spec: Spec) -> Iterator[Finding]:
    seen: set[str] = set()
    for i, skill in enumerate(spec.tools.skills):
        module, _, name = skill.entrypoint.partition(":")
        if module == "builtin" and name not in BUILTIN_SKILLS:
            yield (
                ("tools", "skills", i, "entrypoint"),
                f"no builtin skill '{name}'",
                f"builtin skills: {', '.join(BUILTIN_SKILLS)}",
            )
        if skill.name in seen:
            yield ("tools", "skills", i, "name"), f"skill '{skill.name}' is declared twice", None
        seen.add(skill.name)


def _model_references(spec: Spec) -> Iterator[Finding]:
    declared = set(spec.models.providers)
    known = ", ".join(sorted(declared))
    if spec.models.default not in declared:
        yield ("models", "default"), f"default model '{spec.models.default}' is not declared", f"declared: {known}"
    seen: set[str] = set()
    for i, name in enumerate(spec.models.fallback):
        loc = ("models", "fallback", i)
        if name not in declared:
            yield loc, f"fallback model '{name}' is not declared", f"declared: {known}"
        if name == spec.models.default:
            yield loc, f"fallback '{name}' is the default model: it would fall back to itself", None
        if name in seen:
            yield loc, f"fallback '{name}' is listed twice", None
        seen.add(name)
    for channel_name in type(spec.channels).model_fields:
        channel = getattr(spec.channels, channel_name)
        if channel.model is not None and channel.model not in declared:
            yield (
                ("channels", channel_name, "model"),
                f"channel '{channel_name}' uses model '{channel.model}', which is not declared",
                f"declared: {known}",
            )


def _port_clashes(spec: Spec) -> Iterator[Finding]:
    monitoring = spec.monitoring
    services = [
        (("deploy", "ports", "http"), "nginx http", spec.deploy.ports.http, True),
        (("deploy", "ports", "https"), "nginx https", spec.deploy.ports.https, spec.security.tls.enabled),
        (("deploy", "ports", "engine"), "engine", spec.deploy.ports.engine, True),
        (("monitoring", "prometheus", "port"), "prometheus", monitoring.prometheus.port, monitoring.prometheus.enabled),
        (
            ("monitoring", "alertmanager", "port"),
            "alertmanager",
            monitoring.alertmanager.port,
            monitoring.alertmanager.enabled,
        ),
        (("monitoring", "grafana", "port"), "grafana", monitoring.grafana.port, monitoring.grafana.enabled),
    ]
    owners: dict[int, str] = {}
    for loc, service, port, active in services:
        if not active:
            continue
        if port in owners:
            yield loc, f"port {port} is used by both {owners[port]} and {service}", "give each service its own port"
        else:
            owners[port] = service


def _host_references(spec: Spec) -> Iterator[Finding]:
    names = [h.name for h in spec.deploy.hosts]
    for i, name in enumerate(names):
        if name in names[:i]:
            yield ("deploy", "hosts", i, "name"), f"host '{name}' is declared twice", None
    ha = spec.deploy.ha
    if ha is not None:
        for i, name in enumerate(ha.hosts):
            if name not in names:
                yield ("deploy", "ha", "hosts", i), f"HA host '{name}' is not in deploy.hosts", None
        if len(set(ha.hosts)) != len(ha.hosts):
            yield ("deploy", "ha", "hosts"), "the HA pair must be two different hosts", None
    state = spec.deploy.state
    engines = [h for h in spec.deploy.hosts if "engine" in h.roles]
    if len(engines) > 1 and state.history == "sqlite":
        yield (
            ("deploy", "state", "history"),
            f"{len(engines)} engine hosts cannot share an embedded SQLite history",
            "set deploy.state.history: postgres with postgres_dsn",
        )
    if state.history == "postgres" and state.postgres_dsn is None:
        yield ("deploy", "state"), "history 'postgres' needs postgres_dsn: ${env:...}", None
    if state.rate_limits == "redis" and state.redis_url is None:
        yield ("deploy", "state"), "rate_limits 'redis' needs redis_url: ${env:...}", None


def exposure_warnings(spec: Spec) -> list[str]:
    """Choices that are allowed but open the assistant wider than the defaults; plan shows them."""
    warnings = []
    telegram = spec.channels.telegram
    if telegram.enabled and telegram.mode == "webhook" and telegram_webhook_url(spec) is None:
        # a warning, not an error: TLS may end before nginx (a load balancer), or the webhook be set by hand
        warnings.append(
            "channels.telegram uses a webhook but has no public HTTPS URL, so apply cannot register it with "
            "Telegram: set channels.telegram.public_url, or security.tls with a single-host deploy.server_name, "
            "or channels.telegram.mode: polling"
        )
    if spec.security.anonymous == "anywhere":
        warnings.append(
            "security.anonymous is 'anywhere': every client that reaches the assistant chats and reads "
            "history as the one anonymous user, with no key or token"
        )
    return warnings
