"""Process-wide log formatting for ``blazerpc serve`` (``--log-format text|json``).

Only the command line calls :func:`configure_logging`; an embedded server leaves the
host application's logging alone.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """The standard formatter, with the timestamp's ``strftime`` done once per second.

    On a busy server the access log writes a line per call, and ``strftime`` was the
    largest part of formatting one.
    """

    def __init__(self, fmt: str | None = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


class JsonFormatter(TextFormatter):
    """One JSON object per record; structured fields (``record.blazerpc``) become top-level keys."""

    def __init__(self) -> None:
        super().__init__(None)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "blazerpc", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str) -> None:
    """Log to stderr at ``level``, as text lines or JSON objects."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
