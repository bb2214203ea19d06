"""The access log: one structured line per call on the ``blazerpc.access`` logger.

Each line names the rpc path, model and version, peer address, final status, latency,
request id and (when auth is on) the caller's credential name. ``--log-format text``
writes ``key=value`` pairs; ``--log-format json`` writes one JSON object. Either way the
fields also ride on the record as ``record.blazerpc`` for handlers that want them raw.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING, Any

from blazerpc_core.markers import hookimpl
from blazerpc_core.observability.logformat import DirectLine

if TYPE_CHECKING:
    from collections.abc import Sequence

    from blazerpc_core.call import CallContext, CallNext, Middleware
    from blazerpc_core.settings import ServeSettings

LOGGER_NAME = "blazerpc.access"


class AccessLogMiddleware:
    """Logs each call once it has finished, when its status and latency are known."""

    def __init__(self, *, json_format: bool = False, logger: logging.Logger | None = None) -> None:
        self._json = json_format
        self._logger = logger or logging.getLogger(LOGGER_NAME)
        self._direct = DirectLine(self._logger)
        # Bound once: appending a fresh bound method per call is an avoidable allocation.
        self._on_done = self._log

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        ctx.on_done.append(self._on_done)
        return await call_next(ctx)

    def _log(self, ctx: CallContext) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        model = ctx.model
        status = ctx.status
        fields = {
            "method": ctx.path,
            "model": model.name,
            "version": model.version,
            "peer": ctx.peer,
            "status": status,
            "latency_ms": round(ctx.elapsed() * 1000.0, 3),
            "request_id": ctx.request_id,
            "principal": ctx.principal,
            "error": ctx.status_message if status != "OK" else None,
        }
        text = None if self._json else _text(fields)
        if self._direct.write(text, fields):
            return
        line = json.dumps(fields, separators=(",", ":")) if text is None else text
        # makeRecord + handle rather than info(): skips logging's caller lookup, a stack
        # walk per call that this line (always the same caller) does not need.
        record = logger.makeRecord(
            logger.name, logging.INFO, __file__, 0, line, (), None, extra={"blazerpc": fields}
        )
        logger.handle(record)


def _text(fields: dict[str, Any]) -> str:
    """``key=value`` pairs; values that would break the split (error messages) are quoted."""
    line = (
        f"method={fields['method']} model={_name(fields['model'])} version={_name(fields['version'])} "
        f"peer={fields['peer'] or '-'} status={fields['status']} latency_ms={fields['latency_ms']} "
        f"request_id={fields['request_id'] or '-'}"
    )
    if fields["principal"] is not None:
        line += f" principal={_value(fields['principal'])}"
    if fields["error"] is not None:
        line += f" error={_value(fields['error'])}"
    return line


_QUOTED = frozenset(' "=\n\t')


@functools.lru_cache(maxsize=256)
def _name(value: Any) -> str:
    """:func:`_value` of a model's name or version: the server's own few strings, so worth keeping."""
    return _value(value)


def _value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in _QUOTED):
        return json.dumps(text)
    return text


@hookimpl
def blazerpc_middleware(settings: ServeSettings) -> Sequence[Middleware]:
    return [AccessLogMiddleware(json_format=settings.log_format == "json")]
