"""Telegram photos and documents reach the models that can read them, by webhook and by polling:
a photo (its largest size under the cap, with its caption) as an image part, a text file as text
under its name; everything else, and a photo for a text-only model, gets the polite refusal. The
history keeps "[photo] caption", never the bytes. Real engine, fake Bot API, recording upstreams."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import sys
from collections.abc import Iterator

import httpx
import pytest

from assistantctl.engine.channels.telegram_media import PHOTO_MAX_BYTES, refusal
from assistantctl.renderers import Target
from assistantctl.renderers.engine import build_settings
from assistantctl.schema.loader import SpecError, parse_spec
from engine_process import RunningEngine, model, start_engine, stop_engine
from fake_models import FakeUpstream
from fake_platforms import FakePlatforms
from telegram_helpers import polling_channel, replies, update, wait_until, webhook_channel

TOKEN, HOOK = "616161:FAKE-MEDIA-TOKEN", "FAKE-MEDIA-SECRET"
SECRETS = {"channels.telegram.bot_token": TOKEN, "channels.telegram.webhook_secret": HOOK, "k.a": "anthropic-key"}
PICTURE = b"\xff\xd8\xff\xe0 a small jpeg " * 10
NOTES = "shopping: eggs, milk\nsecond line é\n"


@pytest.fixture
def fake(platforms: FakePlatforms, openai_fake, anthropic_fake, ollama_fake) -> FakePlatforms:
    platforms.reset()
    for upstream in (openai_fake, anthropic_fake, ollama_fake):
        upstream.reset()
    return platforms


@pytest.fixture(scope="module")
def engine(module_dir, platforms: FakePlatforms, openai_fake, anthropic_fake, ollama_fake) -> Iterator[RunningEngine]:
    vision = ["text", "image"]
    models = [
        model("vision", "openai", model="gpt-v", api_base=f"{openai_fake.url}/v1", input=vision),
        model("plain", "openai", model="gpt-t", api_base=f"{openai_fake.url}/v1"),
        model("claude", "anthropic", model="claude-v", api_base=anthropic_fake.url, api_key_secret="k.a", input=vision),
        model("llava", "ollama", model="llava", api_base=ollama_fake.url, input=vision),
    ]
    running = start_engine(module_dir / "tg-media", models, secrets=SECRETS, channels=[webhook_channel(platforms.url)])
    yield running
    stop_engine(running)


def post(engine: RunningEngine, body: dict) -> None:
    headers = {"X-Telegram-Bot-Api-Secret-Token": HOOK}
    assert httpx.post(f"{engine.url}/webhooks/telegram", json=body, headers=headers, timeout=10).status_code == 200


def photo(update_id: int, chat: int, fake: FakePlatforms, caption: str | None = "what is this?") -> dict:
    """A photo in three sizes: the largest is over the cap, so the middle one is the one to fetch."""
    fake.bot.files.update({"small": b"tiny", "middle": PICTURE, "huge": b"x"})
    sizes = [
        {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90, "file_size": 4},
        {"file_id": "middle", "file_unique_id": "m", "width": 800, "height": 800, "file_size": len(PICTURE)},
        {"file_id": "huge", "file_unique_id": "h", "width": 5000, "height": 5000, "file_size": PHOTO_MAX_BYTES + 1},
    ]
    return media(update_id, chat, "photo", sizes, caption)


def media(update_id: int, chat: int, kind: str, value, caption: str | None = None) -> dict:
    body = update(update_id, chat, "x")
    del body["message"]["text"]
    body["message"][kind] = value
    if caption is not None:
        body["message"]["caption"] = caption
    return body


def document(update_id: int, chat: int, fake: FakePlatforms, name: str, mime: str, content: bytes) -> dict:
    fake.bot.files[f"doc{update_id}"] = content
    value = {"file_id": f"doc{update_id}", "file_unique_id": "d", "file_name": name, "mime_type": mime}
    return media(update_id, chat, "document", {**value, "file_size": len(content)}, caption="summarise")


def last_user_content(upstream: FakeUpstream):
    return upstream.calls[-1]["body"]["messages"][-1]["content"]


def stored(engine: RunningEngine, user: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(engine.root / "data" / "history.sqlite3")) as db:
        query = "SELECT content FROM messages WHERE user = ? AND role = 'user' ORDER BY seq"
        return [row[0] for row in db.execute(query, (user,))]


def test_a_photo_goes_to_an_image_model_by_webhook_with_its_caption(engine, fake, openai_fake) -> None:
    post(engine, photo(900, 7100, fake))
    wait_until(lambda: len(replies(fake)) >= 1, what="the reply")
    assert replies(fake) == [{"chat_id": 7100, "text": "Hello from the fake upstream"}]
    picture = f"data:image/jpeg;base64,{base64.b64encode(PICTURE).decode()}"
    assert last_user_content(openai_fake) == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": picture}},
    ]
    assert [c["body"] for c in fake.bot.of("getFile")] == [{"file_id": "middle"}]
    assert stored(engine, "telegram:7100") == ["[photo] what is this?"]
    log = (engine.root / "logs" / "engine.log").read_text() + (engine.root / "stderr.log").read_text()
    assert TOKEN.split(":")[1] not in log


def test_a_photo_for_a_text_only_model_gets_the_polite_refusal(engine, fake, openai_fake) -> None:
    post(engine, update(910, 7200, "/model plain"))
    wait_until(lambda: len(replies(fake)) >= 1, what="the /model reply")
    post(engine, photo(911, 7200, fake))
    wait_until(lambda: len(replies(fake)) >= 2, what="the refusal")
    assert replies(fake)[1] == {"chat_id": 7200, "text": refusal(images=False)}
    assert "photos" not in refusal(images=False) and "text files" in refusal(images=False)
    assert openai_fake.calls == [] and fake.bot.of("getFile") == []


def test_a_photo_over_the_cap_without_a_stated_size_is_not_read_past_it(engine, fake, openai_fake) -> None:
    fake.bot.files["unsized"] = b"\xff" * (PHOTO_MAX_BYTES + 1)
    sizes = [{"file_id": "unsized", "file_unique_id": "u", "width": 4000, "height": 3000}]
    post(engine, media(915, 7250, "photo", sizes, caption="big"))
    wait_until(lambda: len(replies(fake)) >= 1, what="the refusal")
    assert replies(fake) == [{"chat_id": 7250, "text": refusal(images=True)}]
    assert openai_fake.calls == [] and len(fake.bot.of("getFile")) == 1


def test_an_anthropic_model_gets_the_photo_as_an_image_block(engine, fake, anthropic_fake) -> None:
    post(engine, update(920, 7300, "/model claude"))
    wait_until(lambda: len(replies(fake)) >= 1, what="the /model reply")
    post(engine, photo(921, 7300, fake, caption=None))
    wait_until(lambda: len(replies(fake)) >= 2, what="the reply")
    source = {"type": "base64", "media_type": "image/jpeg", "data": base64.b64encode(PICTURE).decode()}
    assert anthropic_fake.calls[-1]["body"]["messages"][-1]["content"] == [{"type": "image", "source": source}]
    assert stored(engine, "telegram:7300")[-1] == "[photo]"


def test_an_ollama_model_gets_the_photo_as_base64_images(engine, fake, ollama_fake) -> None:
    post(engine, update(925, 7350, "/model llava"))
    wait_until(lambda: len(replies(fake)) >= 1, what="the /model reply")
    post(engine, photo(926, 7350, fake, caption="look"))
    wait_until(lambda: len(replies(fake)) >= 2, what="the reply")
    sent = ollama_fake.calls[-1]["body"]["messages"][-1]
    assert sent == {"role": "user", "content": "look", "images": [base64.b64encode(PICTURE).decode()]}


def test_a_text_file_is_read_and_other_files_and_voice_get_the_refusal(engine, fake, openai_fake) -> None:
    post(engine, document(930, 7400, fake, "notes.txt", "text/plain", NOTES.encode()))
    wait_until(lambda: len(replies(fake)) >= 1, what="the reply to the text file")
    assert last_user_content(openai_fake) == f"summarise\n\nThe file notes.txt:\n{NOTES}"
    assert stored(engine, "telegram:7400") == ["[file notes.txt] summarise"]
    post(engine, document(931, 7400, fake, "report.pdf", "application/pdf", b"%PDF-1.7"))
    post(engine, media(932, 7400, "voice", {"file_id": "v", "file_unique_id": "v", "duration": 2}))
    post(engine, document(933, 7400, fake, "bad.txt", "text/plain", b"\xff\xfe not utf-8 \xc3"))
    wait_until(lambda: len(replies(fake)) >= 4, what="the refusals")
    assert [r["text"] for r in replies(fake)[1:]] == [refusal(images=True)] * 3
    assert len(openai_fake.calls) == 1


def test_a_photo_goes_to_an_image_model_when_polling(tmp_path, fake, openai_fake) -> None:
    models = [model("vision", "openai", model="gpt-v", api_base=f"{openai_fake.url}/v1", input=["text", "image"])]
    running = start_engine(tmp_path / "e", models, secrets=SECRETS, channels=[polling_channel(fake.url)])
    try:
        fake.bot.push(photo(940, 7500, fake, caption="and this?"))
        wait_until(lambda: len(replies(fake)) >= 1, what="the reply")
        assert replies(fake) == [{"chat_id": 7500, "text": "Hello from the fake upstream"}]
        assert last_user_content(openai_fake)[0] == {"type": "text", "text": "and this?"}
        assert last_user_content(openai_fake)[1]["image_url"]["url"].endswith(base64.b64encode(PICTURE).decode())
    finally:
        stop_engine(running)


VISION_SPEC = """version: 2
models:
  default: eyes
  providers:
    eyes: {provider: openai, api_base: "https://llm.example.com/v1", input: [text, image]}
    words: {provider: ollama}
"""


def test_the_spec_input_reaches_the_engine_settings_and_is_checked(tmp_path) -> None:
    spec = parse_spec(VISION_SPEC, "assistant.yaml")
    target = Target(spec=spec, host=spec.deploy.hosts[0], root=str(tmp_path / "root"), python=sys.executable)
    rendered = {m.name: m.input for m in build_settings(target).models}
    assert rendered == {"eyes": ["text", "image"], "words": ["text"]}
    for wrong, hint in [
        ("{provider: builtin, input: [text, image]}", "reads no images"),
        ("{provider: ollama, input: [image]}", "must include 'text'"),
    ]:
        with pytest.raises(SpecError) as error:
            parse_spec(VISION_SPEC.replace("{provider: ollama}", wrong), "assistant.yaml")
        assert hint in error.value.render() and "assistant.yaml:6:" in error.value.render()
