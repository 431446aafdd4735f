"""The Jinja2 environment shared by the renderers, with one escaping filter per output language."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

import jinja2

from . import escape


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files("assistantctl.templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["nginx_str"] = escape.nginx_str
    env.filters["ini_value"] = escape.ini_value
    env.filters["shell_quote"] = escape.shell_quote
    env.filters["json"] = lambda value: json.dumps(value, sort_keys=True)
    env.filters["keepalived_word"] = escape.keepalived_word
    env.filters["keepalived_command"] = escape.keepalived_command
    env.filters["logstash_str"] = escape.logstash_str
    return env


def render_template(name: str, **context: object) -> str:
    return environment().get_template(name).render(**context)
