"""The committed JSON Schema matches the models, and real specs validate against it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from assistantctl.schema.json_schema import committed_schema_text, schema_text

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
