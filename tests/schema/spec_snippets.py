"""The smallest valid spec, and the problems the loader finds in a text, for the schema tests.

MINIMAL has no `version:`, so it is read as version 1 and migrated in memory: the snippets appended
to it double as proof that files written before version 2 keep loading, errors in place.
"""

from __future__ import annotations

import pytest

from assistantctl.schema.loader import SpecError, parse_spec

MINIMAL = """\
models:
  default: local
  providers:
    local:
      provider: builtin
"""


def problems(text: str) -> list[str]:
    """The loader's error lines for `text`, read as spec.yaml; fails the test when it loads."""
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "spec.yaml")
    return caught.value.render().splitlines()
