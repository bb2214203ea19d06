"""An audit trail for blazerpc: one JSON line per inference call, written to ``--audit-log-file``.

Each line says who called (the credential name when auth is on, else the peer), which
model and version, with what outcome, when and how long it took, and the request id,
so an operator can answer "who used model X yesterday". Nothing is recorded until the
option is set. Written only against the public plugin API (``blazerpc_core.plugin``).

Install it beside blazerpc-core and it is on: ``pip install ./examples/blazerpc-audit-log``,
then ``blazerpc serve app.py --audit-log-file audit.jsonl``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import click

from blazerpc_core.plugin import CallContext, CallNext, ServerContext, ServeSettings, hookimpl

OPTION = "audit_log_file"


class AuditLog:
    """Middleware: records every call once its final status is known (``ctx.on_done``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        # Line-buffered append: each record reaches the file whole, even if the server is killed.
        self._file = self.path.open("a", buffering=1, encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        ctx.on_done.append(self._record)
        return await call_next(ctx)

    def _record(self, ctx: CallContext) -> None:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "who": ctx.principal or ctx.peer,
            "model": ctx.model.name,
            "version": ctx.model.version,
            "rpc": ctx.rpc,
            "status": ctx.status,
            "latency_ms": round(ctx.elapsed() * 1000, 3),
            "request_id": ctx.request_id,
        }
        line = json.dumps(entry, separators=(",", ":"))
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")


@hookimpl
def blazerpc_cli_options() -> list[click.Option]:
    return [
        click.Option(
            ["--audit-log-file", OPTION], envvar="BLAZERPC_AUDIT_LOG_FILE", show_envvar=True, default=None,
            type=click.Path(dir_okay=False), help="Append one JSON line per inference call to this file.",
        )
    ]


@hookimpl(tryfirst=True)  # outermost: it sees calls that auth or rate limits refuse, too
def blazerpc_middleware(settings: ServeSettings) -> list[Any] | None:
    path = settings.extra.get(OPTION)
    return None if not path else [AuditLog(Path(path))]


def _mine(context: ServerContext) -> AuditLog | None:
    return next((m for m in context.middleware if isinstance(m, AuditLog)), None)


@hookimpl
def blazerpc_startup(context: ServerContext) -> None:
    audit = _mine(context)
    if audit is not None:
        audit.open()


@hookimpl
def blazerpc_shutdown(context: ServerContext) -> None:
    audit = _mine(context)
    if audit is not None:
        audit.close()
