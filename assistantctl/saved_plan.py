"""Saved plans: `plan -o plan.bin` now, `apply plan.bin` later, exactly as reviewed.

The file holds the spec text the plan was made from and, per host, the bundle id it would ship and
a digest of what the host ran at plan time. Applying it renders the stored spec again (renderers
are deterministic, so the same inputs give the same bundle id) and refuses when any bundle id or
any host's live state differs. It never holds a secret value: secrets are resolved again at apply
time and a changed secret changes the bundle id, which is refused like any other change.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from .plan import HostPlan
from .plan_output import summary

FORMAT = "assistantctl-plan/1"


class StalePlan(Exception):
    """The world moved since the plan was made; the message says where."""


@dataclass(frozen=True)
class SavedPlan:
    spec_text: str
    spec_name: str
    hosts: dict[str, dict]  # host -> {"bundle_id", "live_digest"}


def save(path: Path, spec_text: str, spec_name: str, plans: list[HostPlan]) -> None:
    document = {
        "format": FORMAT,
        "spec_name": spec_name,
        "spec_text": spec_text,
        "summary": summary(plans),
        "hosts": {p.host: {"bundle_id": p.bundle.id, "live_digest": p.live_digest} for p in plans},
    }
    # mtime=0: the same plan gives the same bytes, so pipelines can compare plan files.
    path.write_bytes(gzip.compress(json.dumps(document, sort_keys=True).encode(), mtime=0))


def load(path: Path) -> SavedPlan:
    try:
        document = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError) as exc:
        raise StalePlan(f"{path}: not a saved plan ({exc})") from None
    if document.get("format") != FORMAT:
        raise StalePlan(f"{path}: unknown plan format {document.get('format')!r}, expected {FORMAT}")
    return SavedPlan(document["spec_text"], document["spec_name"], document["hosts"])


def verify(saved: SavedPlan, plans: list[HostPlan]) -> None:
    """Raise `StalePlan` unless `plans` (made now) are exactly the saved ones."""
    now = {p.host: p for p in plans}
    if set(now) != set(saved.hosts):
        raise StalePlan(f"the plan covers hosts {sorted(saved.hosts)}, now {sorted(now)}")
    for host, then in sorted(saved.hosts.items()):
        plan = now[host]
        if plan.bundle.id != then["bundle_id"]:
            raise StalePlan(
                f"{host}: renders bundle {plan.bundle.id} now, the plan has {then['bundle_id']} "
                "(a secret, an override or the tool changed since)"
            )
        if plan.live_digest != then["live_digest"]:
            raise StalePlan(f"{host}: what runs there changed since the plan was made (release {plan.live_release})")
