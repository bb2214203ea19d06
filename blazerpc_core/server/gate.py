"""Admission and draining: refuse new calls once shutdown starts, wait for in-flight ones."""

from __future__ import annotations

import asyncio


class Gate:
    """Counts calls in flight; ``close()`` refuses new ones, ``drained()`` waits for the rest."""

    def __init__(self) -> None:
        self.open = False
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.inflight += 1
        self._idle.clear()

    def exit(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    async def drained(self, timeout: float) -> bool:
        """True when every in-flight call finished within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
