"""Loading assistant.yaml: errors point at file:line:column, with a hint where one helps."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistantctl.schema.loader import load_spec
from spec_snippets import MINIMAL, problems

REPO = Path(__file__).resolve().parents[2]


def test_the_default_spec_is_valid():
    spec = load_spec(REPO / "assistant.yaml")
    assert spec.models.default == "local"
    assert spec.models.providers["local"].provider == "builtin"


def test_a_misspelt_key_names_its_line_and_column_and_suggests_the_right_one():
    text = MINIMAL + "limits:\n  rate_limit:\n    requests_per_minite: 10\n"
    assert problems(text) == [
        "spec.yaml:8:5: unknown key 'limits.rate_limit.requests_per_minite' (hint: did you mean 'requests_per_minute'?)"
    ]


def test_a_wrong_value_points_at_the_value():
    text = MINIMAL.replace("provider: builtin", "provider: builtin\n      max_concurrency: many")
    [line] = problems(text)
    assert line.startswith("spec.yaml:6:24: models.providers.local.max_concurrency:")


def test_a_missing_section_is_reported():
    assert problems("name: x\n") == ["spec.yaml:1:1: 'models' is required"]


def test_invalid_yaml_is_reported_with_its_position():
    [line] = problems("models: [unclosed\n")
    assert line.startswith("spec.yaml:2:1: invalid YAML")


def test_an_empty_file_is_an_error():
    assert problems("") == ["spec.yaml:1:1: the file is empty (hint: start from the default assistant.yaml)"]


def test_a_literal_secret_is_refused():
    text = MINIMAL + "    cloud:\n      provider: openai\n      api_key: sk-live-123\n"
    [line] = problems(text)
    assert line.startswith("spec.yaml:8:16: models.providers.cloud.api_key: secret values must be references")
    assert "sk-live-123" not in line


def test_a_channel_naming_an_undeclared_model_is_an_error():
    [line] = problems(MINIMAL + "channels:\n  web:\n    model: cloud\n")
    assert line == "spec.yaml:8:12: channel 'web' uses model 'cloud', which is not declared (hint: declared: local)"


def test_a_fallback_to_the_default_model_is_an_error():
    text = MINIMAL.replace("default: local", "default: local\n  fallback: [local]")
    [line] = problems(text)
    assert line == "spec.yaml:3:14: fallback 'local' is the default model: it would fall back to itself"


def test_two_services_on_one_port_is_an_error():
    text = MINIMAL + "deploy:\n  ports:\n    http: 9000\n    engine: 9000\n"
    [line] = problems(text)
    assert line == (
        "spec.yaml:9:13: port 9000 is used by both nginx http and engine (hint: give each service its own port)"
    )


def test_every_problem_is_reported_at_once_in_file_order():
    text = MINIMAL + "channels:\n  webb: {}\nlimits:\n  burst: 3\n"
    lines = problems(text)
    assert [line.split(": ")[0] for line in lines] == ["spec.yaml:7:3", "spec.yaml:9:3"]


def test_hostile_strings_are_rejected_where_a_config_would_carry_them():
    text = MINIMAL + 'deploy:\n  server_name: "example.com; return 200"\n'
    [line] = problems(text)
    assert line.startswith("spec.yaml:7:16: deploy.server_name:")


@pytest.mark.parametrize("name", ["*", "*a", "**", "*:", "a.*.b", "exa mple.com"])
def test_server_names_nginx_would_refuse_are_spec_errors(name):
    [line] = problems(MINIMAL + f"deploy:\n  server_name: '{name}'\n")
    assert line.startswith("spec.yaml:7:16: deploy.server_name: String should match pattern")


def test_an_unknown_builtin_skill_is_an_error_with_the_known_ones():
    text = MINIMAL + "skills:\n  - name: search\n    entrypoint: builtin:web_search\n"
    [line] = problems(text)
    assert line == (
        "spec.yaml:8:17: no builtin skill 'web_search' (hint: builtin skills: redact, reply_limit, system_prompt)"
    )
