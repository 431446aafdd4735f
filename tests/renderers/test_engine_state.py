"""renderers/engine.py maps deploy.state (shared history and rate limits) into the engine's settings:
the settings name the secrets, the 0600 secrets file holds their values, and the engine's own
storage factory resolves them from that pair."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from assistantctl.bundle import SECRET_MODE, build_bundle
from assistantctl.engine import storage
from assistantctl.engine.history.postgres import PostgresHistory
from assistantctl.engine.history.sqlite import History
from assistantctl.engine.limits.buckets_redis import RedisRateLimiter
from assistantctl.engine.limits.buckets_sqlite import SqliteBuckets
from assistantctl.engine.security.crypto import Sealer
from assistantctl.engine.security.pii import Masker
from assistantctl.engine.settings import EngineSettings, load_secrets
from assistantctl.renderers.engine import render

DSN = "postgresql://assistant:FAKE-PG-PASSWORD-1234@db.internal:5432/assistant"
REDIS_URL = "redis://:FAKE-REDIS-PASSWORD-5678@cache.internal:6379/0"
SHARED = {
    "deploy": {
        "state": {
            "history": "postgres",
            "postgres_dsn": "${env:PG_DSN}",
            "rate_limits": "redis",
            "redis_url": "${env:REDIS_URL}",
        }
    }
}
VALUES = {"deploy.state.postgres_dsn": DSN, "deploy.state.redis_url": REDIS_URL}


def test_shared_state_settings_name_the_secrets_and_never_hold_their_values(make_target) -> None:
    target = make_target(SHARED)
    text = render(target)["settings.json"]
    settings = EngineSettings.model_validate_json(text)
    assert settings.history_backend == "postgres"
    assert settings.history_dsn_secret == "deploy.state.postgres_dsn"
    assert settings.rate_limit_backend == "redis"
    assert settings.rate_limit_redis_url_secret == "deploy.state.redis_url"
    assert settings.secrets_file is not None and settings.secrets_file.endswith("/engine/secrets.json")
    assert "FAKE-PG-PASSWORD" not in text and "FAKE-REDIS-PASSWORD" not in text


def test_the_secrets_file_is_0600_and_holds_the_dsn_and_url(make_target, tmp_path: Path) -> None:
    bundle = build_bundle(make_target(SHARED), secrets=VALUES, only={"engine"})
    secret_file = next(f for f in bundle.files if f.path == "engine/secrets.json")
    assert secret_file.mode == SECRET_MODE == 0o600 and secret_file.sensitive
    assert json.loads(secret_file.content) == VALUES
    bundle.write(tmp_path / "bundle")
    written = tmp_path / "bundle" / "engine" / "secrets.json"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    settings_text = (tmp_path / "bundle" / "engine" / "settings.json").read_text()
    assert DSN not in settings_text and REDIS_URL not in settings_text


def test_the_engine_picks_the_backends_from_the_rendered_pair(make_target, tmp_path: Path) -> None:
    bundle = build_bundle(make_target(SHARED), secrets=VALUES, only={"engine"})
    bundle.write(tmp_path / "bundle")
    rendered = EngineSettings.model_validate_json((tmp_path / "bundle" / "engine" / "settings.json").read_text())
    settings = rendered.model_copy(update={"secrets_file": str(tmp_path / "bundle" / "engine" / "secrets.json")})
    secrets = load_secrets(settings)
    history = storage.history(settings, secrets, Sealer(None), Masker([]))
    limiter = storage.limiter(settings, secrets)
    assert isinstance(history, PostgresHistory) and history.dsn == DSN
    assert isinstance(limiter, RedisRateLimiter) and limiter.url == REDIS_URL


def test_the_default_spec_keeps_history_and_limits_on_the_node(make_target) -> None:
    settings = EngineSettings.model_validate_json(render(make_target())["settings.json"])
    assert (settings.history_backend, settings.history_dsn_secret) == ("sqlite", None)
    assert (settings.rate_limit_backend, settings.rate_limit_redis_url_secret) == ("memory", None)
    assert isinstance(storage.history(settings, {}, Sealer(None), Masker([])), History)
    # Its two workers share their limit buckets through a file of the node, so limits stay exact.
    assert settings.workers == 2 and isinstance(storage.limiter(settings, {}), SqliteBuckets)
