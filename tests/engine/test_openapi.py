"""The OpenAPI document: served == committed, a valid OpenAPI 3.1 document, and the real engine's
responses (and the requests we send) validate against its schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from assistantctl.engine.api import openapi
from assistantctl.engine.app import routes
from engine_process import RunningEngine, model, start_engine, stop_engine

COMMITTED = Path(openapi.__file__).with_name("openapi.json")


@pytest.fixture(scope="module")
def engine(module_dir: Path) -> Iterator[RunningEngine]:
    running = start_engine(module_dir / "openapi", [model("local")])
    yield running
    stop_engine(running)


@pytest.fixture(scope="module")
def document(engine: RunningEngine) -> dict[str, Any]:
    with engine.client() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    return response.json()


def schema(
    document: dict[str, Any], path: str, method: str, status: int = 200, media: str = "application/json"
) -> Draft202012Validator:
    """A validator of the response body, or for an event stream of one event's JSON (its `data`)."""
    body = document["paths"][path][method]["responses"][str(status)]["content"][media]["schema"]
    if media == "text/event-stream":
        data = body["properties"]["data"]
        body = data.get("else", data)["contentSchema"]
    return Draft202012Validator({**body, "components": document["components"]})


def events(stream: httpx.Response) -> list[str]:
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    return [frame.removeprefix("data: ") for frame in stream.text.strip().split("\n\n")]


def request_schema(document: dict[str, Any], path: str, method: str) -> Draft202012Validator:
    body = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return Draft202012Validator({**body, "components": document["components"]})


def test_the_served_document_equals_the_committed_file(document: dict[str, Any]) -> None:
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert document == committed, "regenerate: python -m assistantctl.engine.api.openapi > engine/api/openapi.json"


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate_openapi(document)
    assert document["openapi"].startswith("3.1")


def test_every_rest_route_is_documented_and_nothing_else() -> None:
    table = routes("/metrics", "/ws")
    documented = {(path, method) for path, ops in openapi.document(table)["paths"].items() for method in ops}
    assert documented == {
        ("/health", "get"),
        ("/ready", "get"),
        ("/api/v1/chat", "post"),
        ("/api/v1/chat/stream", "post"),
        ("/api/v1/history", "get"),
        ("/v1/chat/completions", "post"),
        ("/v1/models", "get"),
        ("/admin/v1/default-model", "put"),
        ("/api/v1/conversations", "get"),
        ("/api/v1/conversations/{conversation_id}", "delete"),
        ("/api/v1/users/{user}/history", "delete"),
        ("/admin/v1/history/keys", "get"),
        ("/api/v1/workspace/screenshots/{name}", "get"),
    }


def test_a_route_without_an_operation_makes_generation_fail() -> None:
    from starlette.routing import Route

    async def undocumented(request: object) -> None: ...

    with pytest.raises(LookupError, match="/api/v1/secret"):
        openapi.document([*routes(None), Route("/api/v1/secret", undocumented)])


def test_chat_and_history_responses_validate_against_the_document(
    engine: RunningEngine, document: dict[str, Any]
) -> None:
    first = {"message": "document me"}
    with engine.client() as client:
        request_schema(document, "/api/v1/chat", "post").validate(first)
        chat = client.post("/api/v1/chat", json=first).json()
        follow = {"message": "again", "conversation_id": chat["conversation_id"], "priority": 1}
        request_schema(document, "/api/v1/chat", "post").validate(follow)
        client.post("/api/v1/chat", json=follow).raise_for_status()
        page = client.get("/api/v1/history", params={"conversation_id": chat["conversation_id"], "limit": 3}).json()
        bad = client.post("/api/v1/chat", json={"message": 5})
        stream = client.post("/api/v1/chat/stream", json={"message": "stream me"})
    schema(document, "/api/v1/chat", "post").validate(chat)
    schema(document, "/api/v1/history", "get").validate(page)
    assert len(page["messages"]) == 3 and page["next_before"]
    assert bad.status_code == 400
    schema(document, "/api/v1/chat", "post", 400).validate(bad.json())
    sent = [json.loads(data) for data in events(stream)]
    assert "delta" in sent[0] and sent[-1]["done"] is True
    for event in sent:
        schema(document, "/api/v1/chat/stream", "post", media="text/event-stream").validate(event)


def test_the_other_routes_responses_validate_against_the_document(
    engine: RunningEngine, document: dict[str, Any]
) -> None:
    completion_body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 5}
    request_schema(document, "/v1/chat/completions", "post").validate(completion_body)
    with engine.client() as client:
        answers = {
            ("/health", "get"): client.get("/health").json(),
            ("/ready", "get"): client.get("/ready").json(),
            ("/v1/models", "get"): client.get("/v1/models").json(),
            ("/v1/chat/completions", "post"): client.post("/v1/chat/completions", json=completion_body).json(),
            ("/admin/v1/default-model", "put"): client.put("/admin/v1/default-model", json={"model": "local"}).json(),
        }
    for (path, method), body in answers.items():
        schema(document, path, method).validate(body)


def test_an_undocumented_field_fails_validation(document: dict[str, Any]) -> None:
    validator = schema(document, "/api/v1/history", "get")
    assert not validator.is_valid({"user": "x", "messages": [], "next_before": None, "surprise": 1})
    assert not validator.is_valid({"user": "x", "messages": []})


def test_an_event_stream_is_documented_as_events_whose_data_is_json(document: dict[str, Any]) -> None:
    """Each event is an object (`data`, as schemathesis and OpenAPI 3.2 read an event stream), not
    a string; its `data` holds JSON of the documented event models, or OpenAI's closing [DONE]."""
    for path in ("/api/v1/chat/stream", "/v1/chat/completions"):
        event = document["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
        assert event["type"] == "object" and event["required"] == ["data"]
        data = event["properties"]["data"]
        assert data.get("else", data)["contentMediaType"] == "application/json"
    data = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    assert data["schema"]["properties"]["data"]["if"] == {"const": "[DONE]"}


def test_streamed_completions_validate_against_the_document(engine: RunningEngine, document: dict[str, Any]) -> None:
    body = {"stream": True, "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "hi"}]}
    request_schema(document, "/v1/chat/completions", "post").validate(body)
    with engine.client() as client:
        sent = events(client.post("/v1/chat/completions", json=body))
    assert sent[-1] == "[DONE]" and len(sent) > 3
    validator = schema(document, "/v1/chat/completions", "post", media="text/event-stream")
    for data in sent[:-1]:
        validator.validate(json.loads(data))


def test_the_user_pattern_takes_channel_users(document: dict[str, Any]) -> None:
    for path in ("/api/v1/chat", "/v1/chat/completions"):
        body = {"message": "hi", "messages": [{"role": "user", "content": "hi"}]}
        validator = request_schema(document, path, "post")
        assert validator.is_valid({**body, "user": "telegram:12345"})
        assert not validator.is_valid({**body, "user": "has space"})
    history = next(p for p in document["paths"]["/api/v1/history"]["get"]["parameters"] if p["name"] == "user")
    assert Draft202012Validator(history["schema"]).is_valid("telegram:12345")


@pytest.mark.parametrize(("method", "path", "allowed"), [("GET", "/api/v1/chat", "POST"), ("DELETE", "/health", "GET")])
def test_a_method_a_route_does_not_take_gets_405_with_allow(
    engine: RunningEngine, method: str, path: str, allowed: str
) -> None:
    with engine.client() as client:
        response = client.request(method, path)
    assert response.status_code == 405
    assert allowed in response.headers["allow"].split(", ")
    assert response.json()["error"]["code"] == "method_not_allowed"
