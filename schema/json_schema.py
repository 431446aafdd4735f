"""The published JSON Schema of assistant.yaml, generated from the pydantic models.

`schema/assistant.schema.json` is this text, committed so editors (yaml-language-server) and other
tools can use it without installing assistantctl; a test fails when the two drift apart.
"""

from __future__ import annotations

import json
from importlib.resources import files

from .spec import Spec

SCHEMA_ID = "https://assistantctl.dev/schema/assistant.schema.json"


def schema_document() -> dict:
    document = Spec.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **document}


def schema_text() -> str:
    return json.dumps(schema_document(), indent=2, sort_keys=True) + "\n"


def committed_schema_text() -> str:
    return (files("assistantctl.schema") / "assistant.schema.json").read_text(encoding="utf-8")
