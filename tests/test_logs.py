"""The redaction filter keeps the token and the key out of every log line."""

from __future__ import annotations

import io
import logging

import pytest

from bot.logs import REDACTED, RedactingFilter, _ExcTextFormatter

TOKEN = "MTIzNDU2Nzg5.discord-token-value-that-is-secret"
KEY = "sk-comet-secret-key-0123456789"


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_ExcTextFormatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter([TOKEN, KEY, "short"]))
    logger = logging.getLogger("test.redaction")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_secrets_in_messages_arguments_and_tracebacks_are_removed(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """A message, its %-arguments and an exception's text all lose the secrets."""
    logger, stream = captured
    logger.info("token is %s", TOKEN)
    logger.warning(f"header Authorization: Bearer {KEY}")
    try:
        raise RuntimeError(f"failed with {TOKEN} and {KEY}")
    except RuntimeError:
        logger.exception("request failed")
    text = stream.getvalue()
    assert TOKEN not in text
    assert KEY not in text
    assert text.count(REDACTED) == 4
    assert "RuntimeError" in text  # the traceback itself is kept


def test_short_secrets_are_not_used_as_patterns(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """A value too short to be a real secret would redact ordinary words."""
    logger, stream = captured
    logger.info("a short sentence")
    assert stream.getvalue().strip().endswith("a short sentence")


def test_json_lines_carry_the_same_fields_and_are_redacted() -> None:
    """LOG_FORMAT=json: one object per line with each key=value field; secrets removed."""
    import json

    from bot.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter([KEY]))
    logger = logging.getLogger("test.json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.warning(
        "generation outcome=%s request_id=%s detail=%r", "failed", "r1", f"bad key {KEY}"
    )
    try:
        raise RuntimeError(f"boom {KEY}")
    except RuntimeError:
        logger.exception("unhandled error error_id=%s", "e1")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["level"], first["outcome"], first["request_id"]) == ("WARNING", "failed", "r1")
    assert first["detail"] == f"bad key {REDACTED}"
    assert second["error_id"] == "e1"
    assert "RuntimeError" in second["traceback"]
    assert KEY not in stream.getvalue()
