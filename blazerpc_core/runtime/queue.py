"""The batcher's queue: requests by priority, FIFO within a level, with aging against starvation.

A request's priority comes from the ``x-blazerpc-priority`` metadata (an integer from
-100 to 100, higher first, default 0). Its *effective* priority grows by one level for
every ``aging`` seconds it has waited, so a request is overtaken by fresher
higher-priority work for at most ``(difference in priority) * aging`` seconds: starvation
is bounded. Within one level the oldest request is always at the head, so choosing the
next request only compares the heads of the levels present (usually just one).
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any

from blazerpc_core.errors import InvalidArgument

PRIORITY_HEADER = "x-blazerpc-priority"
MIN_PRIORITY = -100
MAX_PRIORITY = 100


def read_priority(metadata: Any) -> int:
    """The request's priority from its metadata; INVALID_ARGUMENT when it is not a valid integer."""
    raw = metadata.get(PRIORITY_HEADER) if metadata is not None else None
    if raw is None:
        return 0
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        priority = int(text.strip())
    except ValueError:
        raise InvalidArgument(
            f"metadata {PRIORITY_HEADER} must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, "
            f"not {text[:40]!r}"
        ) from None
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidArgument(
            f"metadata {PRIORITY_HEADER} is {priority}; it must be from {MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    return priority


class Pending:
    """One queued request: its arguments, rows, the future its caller awaits, and when it came."""

    __slots__ = ("args", "deadline", "enqueued", "future", "key", "priority", "queued", "rows")

    def __init__(
        self,
        args: Sequence[Any],
        rows: int,
        future: asyncio.Future[Any],
        *,
        priority: int = 0,
        enqueued: float,
        deadline: float | None = None,
        key: Hashable = None,
    ) -> None:
        self.args = args
        self.rows = rows
        self.future = future
        self.priority = priority
        self.enqueued = enqueued
        #: Monotonic time after which the client no longer waits, or None.
        self.deadline = deadline
        #: Requests join one batch only when their keys are equal (see BatchPlan.shape_key).
        self.key = key
        self.queued = False


class RequestQueue:
    """Pending requests by priority level; counts live requests and their rows.

    A request whose caller went away is :meth:`discard`-ed: it stops counting at once and
    is dropped when it reaches the head of its level.
    """

    def __init__(self, *, aging: float) -> None:
        self.aging = aging
        self.rows = 0
        self.count = 0
        self._levels: dict[int, deque[Pending]] = {}
        #: Priorities that have a level, highest first (stored negated for bisect).
        self._order: list[int] = []

    def push(self, item: Pending) -> None:
        level = self._levels.get(item.priority)
        if level is None:
            level = self._levels[item.priority] = deque()
            bisect.insort(self._order, -item.priority)
        level.append(item)
        item.queued = True
        self.rows += item.rows
        self.count += 1

    def discard(self, item: Pending) -> None:
        """Stop counting a queued request (its caller went away)."""
        if item.queued:
            item.queued = False
            self.rows -= item.rows
            self.count -= 1

    def oldest(self) -> float | None:
        """When the longest-waiting live request was queued."""
        oldest: float | None = None
        for head in self._heads():
            if oldest is None or head.enqueued < oldest:
                oldest = head.enqueued
        return oldest

    def take(self, max_rows: int, now: float) -> tuple[list[Pending], list[Pending]]:
        """The next batch (at most ``max_rows`` rows, unless its first request alone is larger)
        and the requests whose deadline had passed, which are removed too."""
        batch: list[Pending] = []
        expired: list[Pending] = []
        rows = 0
        key: Hashable = None
        while self.count:
            item = self._next(now)
            if item.deadline is not None and item.deadline <= now:
                self._pop(item)
                expired.append(item)
                continue
            if batch and (rows + item.rows > max_rows or item.key != key):
                break
            self._pop(item)
            batch.append(item)
            rows += item.rows
            key = item.key
            if rows >= max_rows:
                break
        return batch, expired

    def drain(self) -> list[Pending]:
        """Remove and return every live request (the server is stopping)."""
        live = [item for level in self._levels.values() for item in level if item.queued]
        for item in live:
            self.discard(item)
        self._levels.clear()
        self._order.clear()
        return live

    def _heads(self) -> list[Pending]:
        heads = []
        for negated in list(self._order):
            level = self._levels[-negated]
            while level and not level[0].queued:
                level.popleft()
            if level:
                heads.append(level[0])
            else:
                del self._levels[-negated]
                self._order.remove(negated)
        return heads

    def _next(self, now: float) -> Pending:
        if len(self._order) == 1:
            # The common case, one level: count > 0 means it holds a live request.
            level = self._levels[-self._order[0]]
            while not level[0].queued:
                level.popleft()
            return level[0]
        heads = self._heads()
        best = heads[0]
        if len(heads) > 1:
            best_score = self._score(best, now)
            for head in heads[1:]:
                score = self._score(head, now)
                if score > best_score or (score == best_score and head.enqueued < best.enqueued):
                    best, best_score = head, score
        return best

    def _score(self, item: Pending, now: float) -> float:
        if self.aging <= 0:
            return float(item.priority)
        return item.priority + (now - item.enqueued) / self.aging

    def _pop(self, item: Pending) -> None:
        level = self._levels[item.priority]
        level.popleft()
        self.discard(item)
