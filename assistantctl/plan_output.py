"""Show plans the way Terraform does: +/~/- per file, a summary line, diffs, or JSON."""

from __future__ import annotations

import difflib
import json

from .plan import HostPlan

_SIGN = {"add": "+", "change": "~", "remove": "-"}


def summary(plans: list[HostPlan]) -> dict[str, int]:
    return {
        "add": sum(p.count("add") for p in plans),
        "change": sum(p.count("change") for p in plans),
        "remove": sum(p.count("remove") for p in plans),
        "start": sum(1 for p in plans if p.start_services),
        "runtimes": sum(1 for p in plans if p.install_runtime),
        "repair": sum(1 for p in plans if p.running_drift),
        "hosts": len(plans),
        "hosts_changing": sum(1 for p in plans if p.has_changes),
    }


def summary_line(plans: list[HostPlan]) -> str:
    s = summary(plans)
    if not s["hosts_changing"]:
        return f"No changes. {s['hosts']} host(s) up to date."
    starts = f", services to start on {s['start']} host(s)" if s["start"] else ""
    runtimes = f", engine runtime to install on {s['runtimes']} host(s)" if s["runtimes"] else ""
    repairs = f", running state to repair on {s['repair']} host(s)" if s["repair"] else ""
    return (
        f"Plan: {s['add']} to add, {s['change']} to change, {s['remove']} to remove"
        f"{starts}{runtimes}{repairs} ({s['hosts_changing']} of {s['hosts']} host(s) changing)."
    )


def render_text(plans: list[HostPlan], with_diff: bool = False, warnings: list[str] = ()) -> str:
    out: list[str] = [f"! {warning}" for warning in warnings]
    for plan in plans:
        target = plan.target
        out.append(f"host {plan.host} ({target.host.address}) root {target.root}")
        if not plan.has_changes:
            out.append(f"  up to date at release {plan.live_release}")
            continue
        out.append(f"  release {plan.live_release or '(none)'} -> {plan.bundle.id}")
        if plan.install_runtime:
            out.append(f"  + engine runtime {target.runtime} (virtualenv {target.python.removesuffix('/bin/python')})")
        for change in plan.changes:
            note = ""
            if change.sensitive:
                note = "  (sensitive: value hidden)"
            elif change.drift:
                note = "  (drift: edited on the host since the last apply)"
            out.append(f"  {_SIGN[change.action]} {change.path}{note}")
            if with_diff and not change.sensitive:
                out.extend("      " + line for line in _diff(plan, change.path))
        if plan.start_services:
            out.append("  ~ services: not running -> start")
        out.extend(f"  ~ services: {drift.problem} -> {drift.fix}" for drift in plan.running_drift)
        if plan.engine_restart:
            out.append(f"  ! engine restarts: {plan.engine_restart}; requests in flight then may fail")
        out.append(f"  services to reload: {', '.join(plan.changed_services) or 'none'}")
    out.append(summary_line(plans))
    return "\n".join(out) + "\n"


def _diff(plan: HostPlan, path: str) -> list[str]:
    old = plan.live_content.get(path) or ""
    new = next((f.content.decode() for f in plan.bundle.files if f.path == path), "")
    return [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), f"live/{path}", f"planned/{path}"
        )
    ]


def render_json(plans: list[HostPlan], warnings: list[str] = ()) -> str:
    return (
        json.dumps(
            {
                "summary": summary(plans),
                "warnings": list(warnings),
                "hosts": [
                    {
                        "host": p.host,
                        "root": p.target.root,
                        "live_release": p.live_release,
                        "bundle_id": p.bundle.id,
                        "start_services": p.start_services,
                        "install_runtime": p.target.runtime if p.install_runtime else None,
                        "services_to_reload": p.changed_services,
                        "engine_restart": p.engine_restart,
                        "running_drift": [
                            {"service": d.service, "problem": d.problem, "fix": d.fix} for d in p.running_drift
                        ],
                        "changes": [
                            {
                                "action": c.action,
                                "path": c.path,
                                "service": c.service,
                                "sensitive": c.sensitive,
                                "drift": c.drift,
                            }
                            for c in p.changes
                        ],
                    }
                    for p in plans
                ],
            },
            indent=2,
        )
        + "\n"
    )
