"""engine/logs.py: `event()` formats access and model lines straight from their fields; the text
must stay byte-for-byte what the logging path (and the Logstash grok) produces."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from assistantctl.engine import logs
from assistantctl.engine.security.pii import Masker


@pytest.fixture
def engine_log(tmp_path: Path):
    logs.setup(str(tmp_path), "info", "text", None, Masker(["email"]))
    handler = logging.getLogger("engine").handlers[0]
    handler.streams = []  # keep the lines in memory only
    handler.stopping.set()  # and stop the writer thread, which would take them away
    handler.thread.join()
    yield handler
    logs.stop()


def _both_ways(handler, logger: logging.Logger, level: int, msg: str, **fields: object) -> tuple[str, str]:
    """The line from event()'s direct path and the line from the LogRecord path, same fields."""
    logs.event(logger, level, msg, **fields)
    direct = handler.lines.pop()
    record = logging.LogRecord(logger.name, level, __file__, 1, msg, None, None)
    record.fields = fields
    return direct, handler.format(record) + "\n"


def test_event_lines_match_the_logging_path_byte_for_byte(engine_log) -> None:
    cases = [
        (logs.ACCESS, logging.INFO, "", {"request_id": "9f1c2e", "user": None, "method": "POST", "status": 200}),
        (logs.ACCESS, logging.INFO, "", {"route": "/api/v1/chat", "latency_ms": 12.345, "user": ""}),
        (logs.MODEL, logging.WARNING, 'upstream "500" for a@b.io', {"model": "cloud", "outcome": "error"}),
        (logs.MODEL, logging.INFO, "line\nbreak", {"user": "tab\there", "note": "two words", "flag": True}),
    ]
    for logger, level, msg, fields in cases:
        direct, via_record = _both_ways(engine_log, logger, level, msg, **fields)
        # the timestamps come from two clock reads: compare everything after them
        assert direct.split(" ", 1)[1] == via_record.split(" ", 1)[1]


def test_event_falls_back_to_logging_when_another_handler_listens(engine_log) -> None:
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    extra = Collect()
    logs.ACCESS.addHandler(extra)
    try:
        logs._direct.clear()
        logs.event(logs.ACCESS, logging.INFO, request_id="r1")
    finally:
        logs.ACCESS.removeHandler(extra)
        logs._direct.clear()
    assert [r.fields for r in seen] == [{"request_id": "r1"}]
    assert engine_log.lines.pop().endswith("engine.access request_id=r1\n")
