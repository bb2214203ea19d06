"""Real servers for tests: a :class:`RunningServer` on a free 127.0.0.1 port, in a thread with its own loop."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Sequence
from typing import Any

from blazerpc_core.build import build_server
from blazerpc_core.schema.proto_text import render_proto
from blazerpc_core.server.lifecycle import BlazeServer
from blazerpc_core.settings import ServeSettings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """A :class:`~blazerpc_core.server.lifecycle.BlazeServer` serving from a background thread."""

    def __init__(self, server: BlazeServer) -> None:
        self.server = server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._done: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="blazerpc-test-server", daemon=True)

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def proto_text(self) -> str:
        """The ``.proto`` of what the server serves now."""
        return render_proto(self.server.schema.file)

    def start(self) -> RunningServer:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def run(self, coroutine: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop (e.g. a management call on ``server.host``) and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._done.wait()

    def stop(self, grace_period: float | None = None) -> None:
        """Drain and close; idempotent."""
        if self._loop is None or not self._thread.is_alive():
            return

        async def stop() -> None:
            await self.server.stop(grace_period)
            assert self._done is not None
            self._done.set()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(120)
        self._thread.join(30)


def start_server(
    models: Any,
    *,
    plugins: Sequence[Any] = (),
    load_entry_points: bool = True,
    disabled: Sequence[str] = (),
    **settings: Any,
) -> RunningServer:
    """Build and start a server for ``models`` (an app, a model, or a list of them).

    ``settings`` are :class:`~blazerpc_core.settings.ServeSettings` fields; the host is
    127.0.0.1 and the port a free one unless given.
    """
    serve_settings = ServeSettings(
        **{"host": "127.0.0.1", "port": 0, **settings, "disabled_plugins": tuple(disabled)}
    )
    server = build_server(models, serve_settings, plugins=plugins, load_entry_points=load_entry_points)
    return RunningServer(server).start()
