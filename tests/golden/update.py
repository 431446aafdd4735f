"""Golden files: every rendered file of the default spec and of examples/production.yaml.

`tests/test_golden.py` compares a fresh render with `tests/golden/<spec>/<host>/<path>` byte for
byte. After an intended change to a renderer or template, regenerate them and review the diff:

    make golden            (runs: .venv/bin/python tests/golden/update.py)

Rendering goes through `Target` with a fixed deploy root and interpreter, so the output does not
depend on where the checkout lives or which Python runs it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from assistantctl.bundle import build_bundle
from assistantctl.renderers import Target
from assistantctl.schema.loader import load_spec

GOLDEN = Path(__file__).resolve().parent
REPO = GOLDEN.parents[1]
SPECS = {"assistant": REPO / "assistant.yaml", "production": REPO / "examples" / "production.yaml"}
ROOT = "/srv/assistant"
PYTHON = "/usr/bin/python3"
UPDATE_COMMAND = "make golden  (or: .venv/bin/python tests/golden/update.py)"


def render_spec(spec_path: Path) -> dict[str, bytes]:
    """`<host>/<renderer>/<path>` → content, for every host of the spec (no secrets, no overrides)."""
    spec = load_spec(spec_path)
    files: dict[str, bytes] = {}
    for host in spec.deploy.hosts:
        bundle = build_bundle(Target(spec=spec, host=host, root=ROOT, python=PYTHON))
        files.update({f"{host.name}/{f.path}": f.content for f in bundle.files})
    return files


def stored(name: str) -> dict[str, bytes]:
    folder = GOLDEN / name
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write(name: str, files: dict[str, bytes]) -> None:
    folder = GOLDEN / name
    shutil.rmtree(folder, ignore_errors=True)  # files a renderer no longer writes go too
    for path, content in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def main() -> int:
    for name, spec_path in SPECS.items():
        files = render_spec(spec_path)
        changed = files != stored(name)
        write(name, files)
        print(f"{name}: {len(files)} files{' (updated)' if changed else ''} in {GOLDEN / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
