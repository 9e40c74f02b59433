"""JSON logs: one object per line, extra fields kept, exceptions rendered."""

from __future__ import annotations

import io
import json
import logging

from aifr.observability import (
    ContextFilter,
    JsonLogFormatter,
    bind_log_fields,
    bind_log_scrubber,
    configure_logging,
    unbind_log_fields,
    unbind_log_scrubber,
)


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


def test_configure_logging_installs_one_handler_for_every_logger() -> None:
    """On the root logger, so a capability module's own records are stamped and scrubbed."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        configure_logging("INFO")
        configure_logging("INFO")
        ours = [h for h in root.handlers if h not in before]
        assert len(ours) == 1
        assert isinstance(ours[0].formatter, JsonLogFormatter)
        assert logging.getLogger("aifr").level == logging.INFO
    finally:
        root.handlers[:] = before
        logging.getLogger("aifr").setLevel(logging.NOTSET)


def test_records_logged_under_a_bound_scrubber_lose_its_secrets() -> None:
    """A handler was given the secret's value; its own log line must not print it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("shop_caps")
    logger.addHandler(handler)
    logger.propagate = False
    token = bind_log_scrubber(lambda text: text.replace("hunter2", "[secret:PW]"))
    try:
        logger.warning("logging in with %s", "hunter2")
        try:
            raise RuntimeError("login with hunter2 refused")
        except RuntimeError:
            logger.exception("failed")
    finally:
        unbind_log_scrubber(token)
        logger.warning("after the call: %s", "hunter2")
        logger.removeHandler(handler)
        logger.propagate = True
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]

    assert lines[0]["message"] == "logging in with [secret:PW]"
    assert "hunter2" not in lines[1]["exc"] and "[secret:PW]" in lines[1]["exc"]
    assert lines[2]["message"] == "after the call: hunter2"  # nothing bound: untouched


def test_urls_and_credentials_in_any_record_are_logged_redacted() -> None:
    """Logs show a URL as errors and audit details do: the user name kept, ``***`` for the rest."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("aifr.test.log_urls")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("fetching %s", "https://user:pw@host/?api_key=K")
        logger.warning("header %s", "Bearer abcdefghijklmnopqrstuvwxyz")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "fetching https://user:***@host/?api_key=***"
    assert lines[1]["message"] == "header [REDACTED:authorization]"


AWS_KEY = "AKIAZ7Q2XK4M9P3RT5VW"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
PASSWORD = "correct-horse-battery"  # no shape a detector knows: only its key names it


def test_secrets_planted_anywhere_in_a_log_call_never_reach_the_output() -> None:
    """The secrets canary extends to logs: message, extra fields, nested values, tracebacks."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("aifr.test.log_canary")
    logger.addHandler(handler)
    logger.propagate = False
    fields = bind_log_fields(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", request_id="req-1")
    try:
        logger.warning(
            "calling with %s and %r",
            AWS_KEY,
            {"token": GITHUB_TOKEN},
            extra={
                "password": PASSWORD,
                "target": f"https://deploy:{PASSWORD}@example.com/?access_token={PASSWORD}",
                "request": {"headers": {"Authorization": PASSWORD}, "tags": [GITHUB_TOKEN]},
            },
        )
        try:
            raise RuntimeError(f"upstream refused {AWS_KEY}")
        except RuntimeError:
            logger.exception("failed with %s", GITHUB_TOKEN)
    finally:
        unbind_log_fields(fields)
        logger.removeHandler(handler)
        logger.propagate = True
    output = stream.getvalue()
    for secret in (AWS_KEY, GITHUB_TOKEN, PASSWORD):
        assert secret not in output
    first, second = (json.loads(line) for line in output.splitlines())
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first["request_id"] == "req-1"
    assert first["password"] == "***"
    assert first["request"]["headers"]["Authorization"] == "***"
    assert first["target"].startswith("https://deploy:***@example.com/")
    assert "[REDACTED:aws_access_key]" in second["exc"]
