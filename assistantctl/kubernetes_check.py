"""`python -m assistantctl.kubernetes_check DIR`: the kubernetes renderer's validator.

Every object in DIR (but kustomization.yaml) is checked against the Kubernetes API's own JSON
schemas with kubernetes-validate, offline (it ships them), in strict mode (an unknown field fails),
for each version of KUBERNETES_VERSIONS; an object whose kind or apiVersion has no schema fails
too (the tool's own CLI only warns). A ConfigMap's data must fit what a cluster stores of one
object (1 MiB). kustomization.yaml must name every other file.

Exit 0 with one `checked: ...` line saying what was checked; 1 with the errors; 127 when
kubernetes-validate is not installed here (`render --check` reports that as missing).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import yaml

# The oldest and the newest minor release the manifests are meant for.
KUBERNETES_VERSIONS = ("1.30", "1.37")
KUSTOMIZATION = "kustomization.yaml"
MISSING_EXIT = 127  # the shell's "command not found"
# What the API server stores of one object (etcd's request limit); a ConfigMap's data must fit.
MAX_OBJECT_BYTES = 1_048_576


def check(folder: Path) -> list[str]:
    """The problems found in `folder`, empty when every object is valid."""
    import kubernetes_validate.utils as kv

    problems, count = [], 0
    files = sorted(p.name for p in folder.glob("*.yaml") if p.name != KUSTOMIZATION)
    for name in files:
        for obj in (doc for doc in yaml.safe_load_all((folder / name).read_text(encoding="utf-8")) if doc):
            count += 1
            if (size := _data_bytes(obj)) > MAX_OBJECT_BYTES:
                problems.append(f"{name}: its data holds {size:,} bytes, over a cluster's {MAX_OBJECT_BYTES:,}")
            for release in KUBERNETES_VERSIONS:
                try:
                    kv.validate(obj, release, strict=True)
                except kv.ValidationError as exc:
                    where = ".".join(str(part) for part in exc.path)
                    problems.append(f"{name}: Kubernetes {release}: {where}: {exc.message}")
                except kv.SchemaNotFoundError as exc:
                    problems.append(f"{name}: {exc.message}")
    kustomized = yaml.safe_load((folder / KUSTOMIZATION).read_text(encoding="utf-8")) or {}
    if sorted(kustomized.get("resources", [])) != files:
        problems.append(f"{KUSTOMIZATION}: resources {kustomized.get('resources')} are not the files {files}")
    if not problems:
        releases = " and ".join(KUBERNETES_VERSIONS)
        tool = f"kubernetes-validate {version('kubernetes-validate')}"
        print(f"checked: schema valid ({tool}, strict, Kubernetes {releases}): {count} objects")
    return problems


def _data_bytes(obj: dict) -> int:
    data = (obj.get("data") or {}) if obj.get("kind") == "ConfigMap" else {}
    return sum(len(key.encode()) + len(str(value).encode()) for key, value in data.items())


def main(argv: list[str]) -> int:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        print("kubernetes-validate is not installed here (pip install kubernetes-validate)")
        return MISSING_EXIT
    problems = check(Path(argv[1]))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
