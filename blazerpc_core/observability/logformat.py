"""Process-wide log formatting for ``blazerpc serve`` (``--log-format text|json``).

Only the command line calls :func:`configure_logging`; an embedded server leaves the
host application's logging alone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
#: Records whose structured fields are the whole line (the access log): no separate message.
_FIELDS_ONLY = frozenset({"blazerpc.access"})


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
        return self._time(record.created)

    def direct(self, name: str, created: float, message: str | None, fields: dict[str, Any]) -> str | None:
        """The INFO line :meth:`format` would make of such a record, or None when ``fmt`` is not the default."""
        if self._fmt != TEXT_FORMAT or message is None:
            return None
        return f"{self._time(created)} INFO {name}: {message}"

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(created))
            self._second = second
        return f"{self._stamp},{int((created - second) * 1000):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ISO 8601 UTC ``time``, ``level``, ``logger``, ``message``.

    Structured fields a record carries (``record.blazerpc``: the access log's, a model
    failure's method, model and request id) become top-level keys.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created)

    def direct(self, name: str, created: float, message: str | None, fields: dict[str, Any]) -> str:
        """The INFO line :meth:`format` would make of a record of ``name`` carrying ``fields``.

        ``message`` may be None for loggers whose fields are the whole line (the access log).
        """
        entry: dict[str, Any] = {"time": self._time(created), "level": "INFO", "logger": name}
        if name not in _FIELDS_ONLY:
            entry["message"] = message
        entry.update(fields)
        return json.dumps(entry, default=str)

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            self._second = second
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
        }
        if record.name not in _FIELDS_ONLY:
            entry["message"] = record.getMessage()
        fields = getattr(record, "blazerpc", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes lines in batches, from one writer thread, never making a caller wait.

    The standard handler writes and flushes each record on the thread that logs: a
    ``write`` system call per access-log line on the event loop, and an event loop frozen
    for as long as stderr is (a full pipe, a log collector that stopped reading). Here a
    line is only queued; one daemon thread writes the queue at most every ``interval``
    seconds, at once for a WARNING or worse or when ``HURRY_AT`` bytes wait.

    When the stream does not keep up, at most ``max_pending`` bytes wait; later lines are
    dropped, and once the stream takes lines again a WARNING says how many. A logging
    call costs the same whatever the stream does. No thread is started per batch
    (starting one made the loop wait for it).
    """

    #: Queued bytes at which the writer goes without waiting out its interval.
    HURRY_AT = 64 * 1024

    def __init__(self, interval: float = 0.2, max_pending: int = 4 * 1024 * 1024) -> None:
        super().__init__()
        self._pending: list[str] = []
        self._size = 0
        self._dropped = 0
        self._interval = interval
        self._max_pending = max_pending
        #: Set when lines wait; the writer clears it.
        self._due = threading.Event()
        #: Set when they should not wait out the interval.
        self._hurry = threading.Event()
        #: Held while writing the stream, so batches go out whole and in order.
        self._writing = threading.Lock()
        self._writer: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write(line, record.levelno)

    def write(self, line: str, level: int = logging.INFO) -> None:
        """Queue one formatted line (``level`` decides whether it may wait); never blocks on the stream."""
        line += self.terminator
        with self.lock:  # type: ignore[union-attr]
            if self._size + len(line) > self._max_pending:
                self._dropped += 1
                return
            first = not self._pending
            self._pending.append(line)
            self._size += len(line)
            # Once per crossing: while the writer is stalled, later lines need not set the events again.
            hurry = level >= logging.WARNING or self._size >= self.HURRY_AT > self._size - len(line)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_batches, name="blazerpc-log-writer", daemon=True)
                self._writer.start()
        if hurry:
            self._hurry.set()
            self._due.set()
        elif first:
            self._due.set()

    def _write_batches(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            self._hurry.wait(self._interval)
            self._hurry.clear()
            self.flush()

    def flush(self) -> None:
        """Write what waits, now, on the calling thread (the writer's; or logging's at exit)."""
        with self._writing:
            with self.lock:  # type: ignore[union-attr]
                pending, self._pending, self._size = self._pending, [], 0
                dropped, self._dropped = self._dropped, 0
            if dropped:
                pending.append(self._dropped_line(dropped))
            if pending:
                try:
                    self.stream.write("".join(pending))
                    self.stream.flush()
                except (OSError, ValueError):  # the stream is gone (closed at exit): nothing to do
                    pass

    def _dropped_line(self, dropped: int) -> str:
        record = logging.makeLogRecord({
            "name": "blazerpc.log", "levelno": logging.WARNING, "levelname": "WARNING",
            "msg": "dropped %d log lines: the log stream did not keep up and the server does not wait for it",
            "args": (dropped,),
        })
        try:
            return self.format(record) + self.terminator
        except Exception:
            return record.getMessage() + self.terminator


class DirectLine:
    """Writes INFO lines of one logger straight to its only handler, skipping the ``LogRecord``.

    Building a record, filtering, handling and formatting it was most of an access-log
    line's cost. That work is only skipped when it could not change the output: the
    logger's records reach exactly one handler, a :class:`BatchedStreamHandler` with one of
    the formatters here and no filters on the way. Otherwise :meth:`write` returns False
    and the caller logs as usual (its fields on ``record.blazerpc``).
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def write(self, message: str | None, fields: dict[str, Any]) -> bool:
        """Write one INFO line; False when it must go through ``logging`` instead (see the class docstring)."""
        handler = self._handler()
        if handler is None:
            return False
        formatter: Any = handler.formatter
        line = formatter.direct(self._logger.name, time.time(), message, fields)
        if line is None:
            return False
        handler.write(line)
        return True

    def _handler(self) -> BatchedStreamHandler | None:
        logger: logging.Logger | None = self._logger
        if logger is None or logger.filters:
            return None
        found = None
        while logger is not None:
            for handler in logger.handlers:
                if found is not None or type(handler) is not BatchedStreamHandler:
                    return None
                found = handler
            logger = logger.parent if logger.propagate else None
        if (found is None or found.filters or found.level > logging.INFO
                or type(found.formatter) not in (TextFormatter, JsonFormatter)):
            return None
        return found


def configure_logging(level: str, log_format: str) -> None:
    """Log to stderr at ``level``, as text lines or JSON objects, written in batches.

    grpclib logs every cancelled call and expired deadline at INFO; those are ordinary
    events here (the access log already records them), so its loggers start at WARNING
    unless ``level`` is DEBUG.
    """
    handler = BatchedStreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if level.upper() != "DEBUG":
        logging.getLogger("grpclib").setLevel(logging.WARNING)
