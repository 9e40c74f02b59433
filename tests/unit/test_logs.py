"""JSON logs: one object per line, extra fields kept, exceptions rendered."""

from __future__ import annotations

import io
import json
import logging

from aifr.observability import JsonLogFormatter, configure_logging


def test_records_render_as_json_lines_with_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("aifr.test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("hello %s", "world", extra={"request_id": "r1"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second = (
        json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")
    )
    assert first["message"] == "hello world"
    assert first["request_id"] == "r1"
    assert first["level"] == "WARNING"
    assert "ValueError: boom" in second["exc"]


def test_configure_logging_installs_one_handler_on_the_aifr_logger() -> None:
    configure_logging("INFO")
    configure_logging("INFO")
    logger = logging.getLogger("aifr")
    assert len(logger.handlers) == 1
    assert isinstance(logger.handlers[0].formatter, JsonLogFormatter)
    assert logger.level == logging.INFO
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
