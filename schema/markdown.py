"""docs/spec.md: the reference of assistant.yaml, generated from the published JSON Schema.

One section per object in the file, in the order a reader meets them (`models`, then
`models.providers.<name>` ...), each a table of key, type, default and description. The text comes
from the schema alone, so the reference cannot say something the loader does not enforce; a test
fails when the committed file drifts from `markdown_text()` (`make schema` rewrites it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from .json_schema import schema_document

HEADER = """\
# The assistant.yaml reference

Generated from `schema/assistant.schema.json` by `make schema` (`assistantctl schema --markdown`): edit the
descriptions in `schema/spec/`, never this file. Values are taken as written: a quoted `"600"` is text,
not a number, and a key may appear once per mapping. An unset optional key takes the default shown.
"""

FORMATS = {"uri": "URL", "ipv4": "IPv4 address", "ipv4network": "IPv4 network", "ipv6network": "IPv6 network"}


def markdown_text() -> str:
    document = schema_document()
    definitions = document["$defs"]
    parts = [HEADER]
    for path, schema in _sections(document, "", definitions):
        parts.append(_section(path, schema, definitions))
    return "\n".join(parts)


def _sections(schema: dict, path: str, definitions: dict) -> Iterator[tuple[str, dict]]:
    """(path, object schema) for the object at `path` and every object below it, depth first."""
    yield path, schema
    for key, prop in schema.get("properties", {}).items():
        for suffix, ref in _object_refs(prop):
            yield from _sections(definitions[ref], f"{path}.{key}{suffix}".lstrip("."), definitions)


def _object_refs(prop: dict) -> Iterator[tuple[str, str]]:
    """The objects a property holds: itself (""), a list of them ("[]") or a map of them (".<name>")."""
    for option in prop.get("anyOf", [prop]):
        if "$ref" in option:
            yield "", _ref_name(option)
        elif option.get("type") == "array" and "$ref" in option.get("items", {}):
            yield "[]", _ref_name(option["items"])
        elif option.get("type") == "object" and "$ref" in _values(option):
            yield ".<name>", _ref_name(_values(option))
        elif option.get("type") == "object" and "oneOf" in _values(option):
            # A map of tagged variants (tools.mcp_servers): one section per variant, same path.
            for variant in _values(option)["oneOf"]:
                if "$ref" in variant:
                    yield ".<name>", _ref_name(variant)


def _section(path: str, schema: dict, definitions: dict) -> str:
    lines = [f"## `{path}`" if path else "## Top level", ""]
    if path and schema.get("description"):
        lines += [_one_line(schema["description"]), ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    required = set(schema.get("required", []))
    for key, prop in schema.get("properties", {}).items():
        default = "required" if key in required else _default(prop)
        row = [f"`{key}`", _type(prop, definitions), default, _one_line(prop.get("description", ""))]
        lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def _type(prop: dict, definitions: dict) -> str:
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    text = " or ".join(_one_type(o, definitions) for o in options)
    return text + (" or null" if len(options) < len(prop.get("anyOf", [prop])) else "")


def _one_type(schema: dict, definitions: dict) -> str:
    if "$ref" in schema:
        return "object (below)"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " | ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_one_type(schema.get('items', {}), definitions)}" + _bounds(schema, "Items")
    if kind == "object":
        return f"map of name to {_one_type(_values(schema), definitions)}" + _bounds(schema, "Properties")
    if "anyOf" in schema:
        return " or ".join(_one_type(o, definitions) for o in schema["anyOf"])
    if "oneOf" in schema:
        return " or ".join(_one_type(o, definitions) for o in schema["oneOf"])
    name = {"integer": "integer", "number": "number", "string": "text", "boolean": "true/false"}.get(kind, kind)
    name = FORMATS.get(schema.get("format", ""), name)
    return name + _bounds(schema, "Length" if kind == "string" else "")


def _bounds(schema: dict, suffix: str) -> str:
    low = schema.get(f"min{suffix}" if suffix else "minimum")
    high = schema.get(f"max{suffix}" if suffix else "maximum")
    above = schema.get("exclusiveMinimum")
    parts = []
    if above is not None:
        parts.append(f"> {_number(above)}")
    if low is not None:
        parts.append(f"≥ {_number(low)}")
    if high is not None:
        parts.append(f"≤ {_number(high)}")
    if not parts:
        return ""
    noun = {"Items": " items", "Length": " chars", "Properties": " entries"}.get(suffix, "")
    return f" ({', '.join(parts)}{noun})"


def _default(prop: dict) -> str:
    if "default" not in prop:
        return "—"  # computed (see the description) or required
    value = prop["default"]
    if value is None:
        return "unset"
    if isinstance(value, dict):
        return "see below" if value else "`{}`"
    if isinstance(value, float):
        return f"`{_number(value)}`"
    return f"`{value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}`"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _cell(text: str) -> str:
    # A table cell is Markdown with inline HTML: "<name>" would vanish as an unknown tag.
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _values(schema: dict) -> dict:
    """The schema of a map's values, whether keyed by a name pattern or not."""
    patterns = list(schema.get("patternProperties", {}).values())
    return patterns[0] if patterns else schema.get("additionalProperties", {})


def _ref_name(schema: dict) -> str:
    return schema["$ref"].rsplit("/", 1)[-1]
