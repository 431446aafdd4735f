"""Ansible stdout callback for assistantctl: one progress line per host and step, and a JSON
result file (per-host stats, failure messages, and how many of the plays each host took part in)
that `assistantctl apply` reads back.

ansible-core ships no JSON callback of its own (that one lives in the ansible.posix collection),
and a callback keeps the run streaming to the user instead of printing only at the end.
"""

from __future__ import annotations

import json
import os
import sys

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: assistant_progress
type: stdout
short_description: progress lines plus a JSON result file for assistantctl
description: writes per-host stats and failure messages to $ASSISTANT_RESULT_FILE
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "assistant_progress"

    def __init__(self) -> None:
        super().__init__()
        self._causes: dict[str, list[str]] = {}
        self._plays = 0
        self._play = -1  # index of the play running now
        self._ran: dict[str, set[int]] = {}  # host -> the plays it ran tasks in

    def v2_playbook_on_start(self, playbook) -> None:
        self._plays = len(playbook.get_plays())

    def v2_playbook_on_play_start(self, play) -> None:
        self._play += 1

    def _ran_in_play(self, result) -> None:
        self._ran.setdefault(result.host.get_name(), set()).add(self._play)

    def v2_runner_on_skipped(self, result) -> None:
        self._ran_in_play(result)

    def _line(self, host: str, status: str, task: str, detail: str = "") -> None:
        sys.stdout.write(f"  [{host}] {status:<9} {task}{(': ' + detail) if detail else ''}\n")
        sys.stdout.flush()

    def v2_runner_on_ok(self, result) -> None:
        self._ran_in_play(result)
        if result.task.action in ("ansible.builtin.debug", "debug", "ansible.builtin.set_fact", "set_fact"):
            return
        status = "changed" if result.result.get("changed") else "ok"
        self._line(result.host.get_name(), status, result.task.get_name())

    def v2_runner_item_on_failed(self, result) -> None:
        # A failed loop item carries the tool's own words (nginx -t's stderr, say): keep them.
        host = result.host.get_name()
        label = result.result.get("_ansible_item_label") or result.result.get("item")
        self._causes.setdefault(host, []).append(f"{label}: {_message(result.result)}")

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        self._ran_in_play(result)
        if ignore_errors:
            return
        host = result.host.get_name()
        message = _message(result.result)
        if "results" not in result.result:
            self._causes.setdefault(host, []).append(message)
        self._line(host, "FAILED", result.task.get_name(), message.splitlines()[0] if message else "")

    def v2_runner_on_unreachable(self, result) -> None:
        self._ran_in_play(result)
        host = result.host.get_name()
        message = f"unreachable: {result.result.get('msg', '')}".strip()
        self._causes.setdefault(host, []).append(message)
        self._line(host, "UNREACH", result.task.get_name(), message)

    def v2_playbook_on_stats(self, stats) -> None:
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        path = os.environ.get("ASSISTANT_RESULT_FILE")
        if path:
            with open(path, "w", encoding="utf-8") as out:
                plays = {host: len(ran) for host, ran in self._ran.items()}
                json.dump({"stats": summary, "failures": self._causes, "plays": self._plays, "ran": plays}, out)


def _message(result: dict) -> str:
    if "results" in result:
        return "one or more items failed"
    parts = [str(result.get(key) or "").strip() for key in ("msg", "stderr")]
    return "\n".join(p for p in parts if p and p != "non-zero return code") or "failed"
