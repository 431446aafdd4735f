"""Lay a user's override files over a renderer's output, like kolla-ansible's config overrides.

`overrides/<renderer>/<path>` merges into the rendered `<renderer>/<path>`, by the file's format:
YAML and JSON deep-merge (mappings merge key by key, lists and scalars replace), INI merges section
by section and key by key. Formats without a structured merge (nginx) take snippet files instead,
in folders the renderer includes only when they are filled (`nginx/http.d/*.conf`,
`nginx/server.d/*.conf`). An override that matches nothing, or that cannot be merged, is an
`OverrideError` naming the override file: nothing a user wrote is ever silently dropped.

Pure functions, no I/O: `assistantctl.overrides` reads the files, the bundle step calls this.
This module defines no `RENDERER`, so it is not a target.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from posixpath import dirname, splitext

import yaml

from . import nginx
from .base import Files, Renderer, Target


class OverrideError(ValueError):
    """An override file that cannot be applied; the message starts with the file's path."""


@dataclass(frozen=True)
class Snippets:
    """Folders of snippet files a renderer includes, and its render function that adds the hooks."""

    folders: tuple[str, ...]
    render: Callable[[Target, frozenset[str]], Files]


SNIPPETS: dict[str, Snippets] = {"nginx": Snippets(tuple(nginx.SNIPPET_FOLDERS), nginx.render)}

# Merge format by suffix; a renderer whose `.conf` files are INI says so in RENDERER_FORMATS.
SUFFIX_FORMATS = {".yml": "yaml", ".yaml": "yaml", ".json": "json", ".ini": "ini"}
RENDERER_FORMATS = {"supervisor": {".conf": "ini"}}


def render_with_overrides(renderer: Renderer, target: Target, overrides: Mapping[str, str], folder: str) -> Files:
    """The renderer's files with `overrides` (keyed by path inside the renderer's folder) applied.

    `folder` is the overrides folder as the user named it, used in error messages.
    """
    snippets = SNIPPETS.get(renderer.name)
    used = frozenset(dirname(path) for path in overrides if snippets and dirname(path) in snippets.folders)
    rendered = snippets.render(target, used) if snippets and used else renderer.render(target)
    return merge_overrides(renderer.name, rendered, overrides, folder)


def merge_overrides(renderer: str, rendered: Files, overrides: Mapping[str, str], folder: str) -> Files:
    """`rendered` with each override merged into the file it names and snippet files added.

    An override of a file this host does not render is left to the hosts that do (supervisor's
    nginx program exists on edge hosts only); `check_matched` refuses one that no host renders.
    """
    result = dict(rendered)
    snippets = SNIPPETS.get(renderer)
    for path, text in sorted(overrides.items()):
        shown = f"{folder}/{renderer}/{path}"
        if snippets and path.split("/", 1)[0] in snippets.folders:
            _check_snippet(shown, path)
            result[path] = text
            continue
        if path not in rendered:
            continue
        kind = merge_format(renderer, path)
        if kind is None:
            hint = _snippet_hint(renderer, folder)
            raise OverrideError(f"{shown}: {renderer}/{path} has no structured merge (YAML, JSON or INI){hint}")
        result[path] = MERGERS[kind](rendered[path], text, shown)
    return dict(sorted(result.items()))


def check_matched(overrides: Mapping[str, str], rendered: Mapping[str, set[str]], folder: str) -> None:
    """Refuse an override (keyed `<renderer>/<path>`) that matches no file any host renders;
    `rendered` holds each renderer's paths, over all hosts, snippets included."""
    for key in sorted(overrides):
        renderer, _, path = key.partition("/")
        if path not in rendered.get(renderer, set()):
            known = ", ".join(sorted(rendered.get(renderer, set()))) or "nothing on any host"
            hint = _snippet_hint(renderer, folder)
            raise OverrideError(f"{folder}/{key}: matches no rendered file; {renderer} renders: {known}{hint}")


def merge_format(renderer: str, path: str) -> str | None:
    suffix = splitext(path)[1]
    return RENDERER_FORMATS.get(renderer, {}).get(suffix) or SUFFIX_FORMATS.get(suffix)


def _check_snippet(shown: str, path: str) -> None:
    folder, _, name = path.partition("/")
    if "/" in name or not name.endswith(".conf"):
        raise OverrideError(f"{shown}: only {folder}/*.conf files are included; move or rename it")


def _snippet_hint(renderer: str, folder: str) -> str:
    snippets = SNIPPETS.get(renderer)
    if snippets is None:
        return ""
    places = " or ".join(f"{folder}/{renderer}/{f}/*.conf" for f in snippets.folders)
    return f" (hint: put snippets in {places})"


# --- structured merges ------------------------------------------------------------------------


def deep_merge(base: object, override: object) -> object:
    """Mappings merge key by key (recursively); anything else in `override` replaces `base`."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    return override


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def merge_yaml(base: str, override: str, shown: str) -> str:
    try:
        data = yaml.safe_load(override)
    except yaml.YAMLError as exc:
        raise OverrideError(f"{shown}: invalid YAML: {exc}") from None
    merged = deep_merge(_mapping(yaml.safe_load(base), shown), _mapping(data, shown))
    text = yaml.dump(
        merged, Dumper=_NoAliases, sort_keys=True, default_flow_style=False, allow_unicode=True, width=100_000
    )
    return f"# Rendered by assistantctl from assistant.yaml, with {shown} merged in.\n{text}"


def merge_json(base: str, override: str, shown: str) -> str:
    try:
        data = json.loads(override)
    except json.JSONDecodeError as exc:
        raise OverrideError(f"{shown}: invalid JSON: {exc}") from None
    merged = deep_merge(_mapping(json.loads(base), shown), _mapping(data, shown))
    return json.dumps(merged, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _mapping(data: object, shown: str) -> dict:
    if not isinstance(data, dict):
        raise OverrideError(f"{shown}: an override must be a mapping at the top level")
    return data


# --- INI --------------------------------------------------------------------------------------

_SECTION = re.compile(r"^\[([^\]]+)\]\s*$")
_KEY = re.compile(r"^([^\s=:;#\[][^=:]*?)(\s*[=:]\s*)(.*)$")
_COMMENT = re.compile(r"^\s*([;#].*)?$")


def parse_ini(text: str, shown: str) -> dict[str, dict[str, tuple[str, str]]]:
    """Sections of an override → {lower-case key: (key as written, value)}; continuation lines
    (indented) join the value with newlines."""
    sections: dict[str, dict[str, tuple[str, str]]] = {}
    current: dict[str, tuple[str, str]] | None = None
    last: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line[:1].isspace() and line.strip() and last is not None and current is not None:
            key, value = current[last]
            current[last] = (key, f"{value}\n{line.strip()}")
            continue
        last = None
        if _COMMENT.match(line):
            continue
        if section := _SECTION.match(line):
            current = sections.setdefault(section.group(1).strip(), {})
            continue
        pair = _KEY.match(line)
        if pair is None or current is None:
            where = "is not `key = value` or `[section]`" if pair is None else "sets a key outside any [section]"
            raise OverrideError(f"{shown}:{number}: line {where}")
        last = pair.group(1).strip().lower()
        if last in current:
            raise OverrideError(f"{shown}:{number}: '{pair.group(1).strip()}' is set twice in its section")
        current[last] = (pair.group(1).strip(), pair.group(3).strip())
    return sections


def merge_ini(base: str, override: str, shown: str) -> str:
    """Replace the values of keys the override sets (keeping the rendered comments and layout),
    add its new keys at the end of their section and its new sections at the end of the file."""
    pending = {name: dict(keys) for name, keys in parse_ini(override, shown).items()}
    separator = next((m.group(2) for m in map(_KEY.match, base.splitlines()) if m), " = ")
    out: list[str] = []
    section: str | None = None
    insert_at = 0  # after the last key line of the current section
    skipping = False  # continuation lines of a replaced value
    for line in base.splitlines():
        if skipping and line[:1].isspace() and line.strip():
            continue
        skipping = False
        if header := _SECTION.match(line):
            out[insert_at:insert_at] = _lines(pending.pop(section, {}) if section else {}, separator)
            section = header.group(1).strip()
            out.append(line)
            insert_at = len(out)
            continue
        pair = _KEY.match(line) if section is not None else None
        if pair and pair.group(1).strip().lower() in pending.get(section, {}):
            _, value = pending[section].pop(pair.group(1).strip().lower())
            out.append(f"{pair.group(1)}{pair.group(2)}{_value(value)}")
            skipping = True
        else:
            out.append(line)
        if pair or (line[:1].isspace() and line.strip()):
            insert_at = len(out)
    out[insert_at:insert_at] = _lines(pending.pop(section, {}) if section else {}, separator)
    for name, keys in pending.items():
        out += ["", f"[{name}]", *_lines(keys, separator)]
    return "\n".join(out) + "\n"


def _lines(keys: dict[str, tuple[str, str]], separator: str) -> list[str]:
    return [f"{key}{separator}{_value(value)}" for key, value in keys.values()]


def _value(value: str) -> str:
    return value.replace("\n", "\n    ")


MERGERS: dict[str, Callable[[str, str, str], str]] = {"yaml": merge_yaml, "json": merge_json, "ini": merge_ini}
