"""Logging set-up: one line per record, secrets removed from every record."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import Final

REDACTED = "[redacted]"


class RedactingFilter(logging.Filter):
    """Replaces each secret in a record's final text, arguments and traceback included."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Short strings would redact ordinary words; real tokens and keys are long.
        self._secrets = tuple(secret for secret in secrets if len(secret) >= 8)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, scrub it, and freeze it so handlers print the clean text."""
        if not self._secrets:
            return True
        record.msg = self._scrub(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Formatting the traceback here lets it be scrubbed like the message.
            record.exc_text = self._scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self._scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self._scrub(record.stack_info)
        return True


class _ExcTextFormatter(logging.Formatter):
    """Prints exc_text set by the filter even though exc_info was cleared."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.exc_text and record.exc_text not in text:
            text = f"{text}\n{record.exc_text}"
        return text


# `key=value` pairs of our structured lines; a value is a bare word or a Python repr.
_FIELD: Final = re.compile(r"""(?<!\S)([a-z_]+)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)""")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and each `key=value` field.

    The message is the redacted text (the filter runs first), so the fields are too.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        document: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for key, value in _FIELD.findall(message):
            if key not in document:
                document[key] = value[1:-1] if value[:1] in "'\"" else value
        if record.exc_text:
            document["traceback"] = record.exc_text
        elif record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def configure_logging(
    level: str, secrets: Iterable[str], *, json_lines: bool = False
) -> logging.Handler:
    """Send every logger to stderr through the redaction filter; return the handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else _ExcTextFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"
        )
    )
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # discord.py's gateway chatter at INFO is noise for operators.
    logging.getLogger("discord").setLevel(max(logging.getLevelName(level), logging.INFO))
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)
    return handler
