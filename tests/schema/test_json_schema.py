"""The committed JSON Schema matches the models, and real specs validate against it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from assistantctl.schema.json_schema import committed_schema_text, schema_document, schema_text

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_schema_matches_the_models():
    assert committed_schema_text() == schema_text(), "run `make schema` and commit schema/assistant.schema.json"


def test_the_default_spec_validates_against_the_published_schema():
    schema = json.loads(committed_schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((REPO / "assistant.yaml").read_text()), schema)


def test_the_schema_rejects_unknown_keys_like_the_loader_does():
    schema = json.loads(committed_schema_text())
    spec = yaml.safe_load((REPO / "assistant.yaml").read_text())
    spec["limits"]["rate_limitt"] = {}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(spec))
    assert any("rate_limitt" in e.message for e in errors)


def test_the_default_spec_names_the_schema_for_editors():
    first_line = (REPO / "assistant.yaml").read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=schema/assistant.schema.json"


def _properties(document: dict):
    """(dotted model.property, property schema) for every property in the schema and its $defs."""
    for name, model in [(document["title"], document), *document["$defs"].items()]:
        for key, prop in model.get("properties", {}).items():
            yield f"{name}.{key}", prop


def test_every_property_of_the_published_schema_has_a_description():
    properties = list(_properties(schema_document()))
    assert len(properties) > 150, "the walk must reach every model"
    undocumented = [name for name, prop in properties if not prop.get("description", "").strip()]
    assert not undocumented, f"add a description in schema/spec/ for: {', '.join(undocumented)}"


def test_the_committed_markdown_reference_matches_the_schema():
    from assistantctl.schema.markdown import markdown_text

    committed = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")
    assert committed == markdown_text(), "run `make schema` and commit docs/spec.md"


def test_the_markdown_reference_documents_every_property():
    from assistantctl.schema.markdown import markdown_text

    text = markdown_text().replace("&lt;", "<").replace("&gt;", ">").replace("\\|", "|")
    for name, prop in _properties(schema_document()):
        assert prop["description"].split("\n")[0][:40] in text, name
