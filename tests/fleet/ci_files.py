"""Reading the example pipelines the way their CI systems do: GitHub's `${{ }}` expressions and
job/step environments, GitLab's `extends` and script sections. Only what the examples use."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import yaml
from checkout import REPO

GITHUB = REPO / "examples" / "ci" / "github-actions.yml"
GITLAB = REPO / "examples" / "ci" / "gitlab-ci.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load(path: Path) -> dict:
    # PyYAML reads GitHub's `on:` key as True (YAML 1.1); the examples never need it by name.
    return yaml.safe_load(path.read_text())


def _namespace(value: object) -> object:
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    return value


def evaluate(expression: str, context: dict) -> object:
    """One GitHub expression: contexts (github.x, secrets.X), string literals, ==, &&, || and
    format(). && and || return an operand, as in Python; an unknown name raises."""
    python = expression.replace("&&", " and ").replace("||", " or ")
    names = {key: _namespace(value) for key, value in context.items()}
    return eval(python, {"__builtins__": {}, "format": lambda text, *args: text.format(*args)}, names)  # noqa: S307


def substitute(text: str, context: dict) -> str:
    """`text` with each `${{ ... }}` replaced by its value (booleans as GitHub prints them)."""

    def value(match: re.Match) -> str:
        result = evaluate(match.group(1), context)
        return str(result).lower() if isinstance(result, bool) else str(result)

    return EXPRESSION.sub(value, text)


def github_job_env(workflow: dict, job: str, context: dict) -> dict[str, str]:
    merged = {**workflow.get("env", {}), **workflow["jobs"][job].get("env", {})}
    return {name: substitute(str(value), context) for name, value in merged.items()}


def gitlab_job(pipeline: dict, name: str) -> dict:
    """A job with what it `extends` merged under it (top-level keys only, as GitLab does)."""
    job = dict(pipeline[name])
    for parent in reversed([job.pop("extends")] if isinstance(job.get("extends"), str) else job.pop("extends", [])):
        job = {**gitlab_job(pipeline, parent), **job}
    return job


def commands(path: Path) -> list[str]:
    """Every shell command of a pipeline, one string per run:/script line."""
    data = load(path)
    if path == GITHUB:
        return [step["run"] for job in data["jobs"].values() for step in job["steps"] if "run" in step]
    found = []
    for name, job in data.items():
        if isinstance(job, dict) and not name.startswith("."):
            merged = gitlab_job(data, name)
            for section in ("before_script", "script", "after_script"):
                found.extend(merged.get(section, []))
    return found
