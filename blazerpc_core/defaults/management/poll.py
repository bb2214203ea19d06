"""``--model-control poll``: follow the model repository's files while serving.

Every ``--poll-interval`` seconds the repository's entries are compared with what was
seen before, by modification time (a directory by its newest file): an entry that
appeared is loaded, one that changed is reloaded, one that went is unloaded. A change
that fails (a file half written, code that raises) is logged and tried again only when
the entry changes again; what was serving keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from blazerpc_core.server.host import ModelHost

log = logging.getLogger("blazerpc.management")


def entries_of(root: Path) -> dict[str, float]:
    """Each repository entry and its newest modification time."""
    seen: dict[str, float] = {}
    for path in root.iterdir():
        if path.name.startswith((".", "_")):
            continue
        try:
            if path.is_dir():
                stamps = [p.stat().st_mtime for p in path.rglob("*") if p.is_file()]
                seen[path.name] = max([path.stat().st_mtime, *stamps])
            else:
                seen[path.name] = path.stat().st_mtime
        except OSError:  # it went while we looked
            continue
    return seen


class RepositoryPoller:
    """Loads, reloads and unloads repository entries as their files appear, change and go."""

    def __init__(self, host: ModelHost, root: Path, interval: float) -> None:
        self._host = host
        self._root = root
        self._interval = interval
        self._seen: dict[str, float] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._seen = await loop.run_in_executor(None, entries_of, self._root)
        while True:
            await asyncio.sleep(self._interval)
            try:
                now = await loop.run_in_executor(None, entries_of, self._root)
            except OSError as exc:
                log.warning("cannot read the model repository %s: %s", self._root, exc)
                continue
            await self._apply(now)

    async def _apply(self, now: dict[str, float]) -> None:
        before, self._seen = self._seen, now
        served = {e.origin.source for e in self._host.entries.values() if e.origin.kind == "repository"}
        for name in sorted(set(before) - set(now)):
            await self._each(name, "unload")
        for name in sorted(now):
            if name not in before or (name not in served and before.get(name) != now[name]):
                await self._each(name, "load")
            elif before[name] != now[name]:
                await self._each(name, "reload")

    async def _each(self, source: str, change: str) -> None:
        host = self._host
        names = sorted({e.spec.name for e in host.entries.values()
                        if e.origin.kind == "repository" and e.origin.source == source})
        try:
            if change == "load":
                loaded = await host.load(source)
                log.info("repository: loaded %s from %s", ", ".join(e.label for e in loaded), source)
            for name in names:
                if change == "reload":
                    await host.reload(name, None)
                    log.info("repository: reloaded %r from %s", name, source)
                elif change == "unload":
                    await host.unload(name, None)
                    log.info("repository: unloaded %r (%s went)", name, source)
        except Exception as exc:
            log.warning("repository: could not %s %s: %s: %s", change, source, type(exc).__name__, exc)
