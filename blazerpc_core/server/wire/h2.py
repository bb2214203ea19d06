"""h2's connection state machine, without two costs it pays on every frame and every stream.

Both are in h2 4.x and cost the server about 4% of its event loop at 64 clients (py-spy,
loop thread only), as much as raw grpclib pays for them:

* **Formatting frames for a trace log.** h2 builds ``repr(frame)`` for every frame it
  receives, as the argument of a trace call its default logger drops: the hex of the
  payload, the flags, the padding (about 3 us a frame). Here, unless a real logger was
  configured, each received frame is given a subclass of its own type whose ``repr`` is
  only its name and stream; the connection dispatches those subclasses to h2's own
  handlers, so every decision, error and reply is still h2's.
* **Counting open streams by walking them all.** Before opening a stream h2 counts the
  open ones by iterating every stream it holds (and drops the closed ones as it goes):
  O(streams) per call. The number of streams held is an upper bound of the open ones, so
  while it is under the limit (and under the tidy mark) the walk cannot change h2's
  decision and is skipped; past either, h2 walks and tidies as before. The mark is
  ``TIDY_AT`` or twice the streams found open at the last walk, whichever is more: with
  64 calls in flight on one connection a fixed mark of 32 walked 64 streams for every
  new one, while twice the open count walks once per that many new streams, and still
  holds at most twice as many streams as are open.

And without one cost it pays over a connection's life:

* **Remembering every closed stream.** h2 keeps how each of the last 65,536 closed streams
  closed, in an ordered dict: about 11 MB for a connection that has served that many calls,
  which every full garbage collection walks (4 ms each, per connection, at 64 clients: the
  largest part of the c=64 tail). h2 reads it for one decision only: a frame on a stream
  *reset* earlier is a stream error (the peer's frames were in flight, RFC 9113 §5.1),
  while on a stream that ended normally it is a connection error whether remembered or
  not. Here only the last ``RESETS_KEPT`` reset streams are kept, as the RFC allows (an
  endpoint may bound how long it ignores such frames). A forgotten normal close
  changes one error code: HEADERS reusing its id is PROTOCOL_ERROR (an unexpected stream
  id) rather than STREAM_CLOSED, a connection error either way.
"""

from __future__ import annotations

from collections import OrderedDict

from h2.config import DummyLogger, H2Configuration
from h2.connection import H2Connection
from h2.events import Event
from h2.stream import StreamClosedBy
from hyperframe.frame import FRAMES, ExtensionFrame, Frame

#: The least number of streams held (open or closed, not yet dropped) from which h2
#: walks them to count and tidy.
TIDY_AT = 32

#: Reset streams a connection remembers (frames still arriving on one are a stream error).
RESETS_KEPT = 1024

_RESET = frozenset({StreamClosedBy.SEND_RST_STREAM, StreamClosedBy.RECV_RST_STREAM})


def _quiet(frame_type: type[Frame]) -> type[Frame]:
    """A subclass of ``frame_type`` whose repr does not format the frame's contents."""

    def __repr__(self: Frame) -> str:
        return f"{frame_type.__name__}(stream_id={self.stream_id})"

    return type(frame_type.__name__, (frame_type,), {"__repr__": __repr__, "__module__": __name__})


class ResetStreams(OrderedDict[int, StreamClosedBy | None]):
    """h2's memory of closed streams, keeping only the last ``RESETS_KEPT`` that were reset."""

    def __setitem__(self, stream_id: int, closed_by: StreamClosedBy | None) -> None:
        if closed_by not in _RESET:
            return
        super().__setitem__(stream_id, closed_by)
        if len(self) > RESETS_KEPT:
            self.popitem(last=False)


#: Each frame type h2 may receive → its quiet subclass.
_QUIET: dict[type[Frame], type[Frame]] = {cls: _quiet(cls) for cls in (*FRAMES.values(), ExtensionFrame)}


class WireH2Connection(H2Connection):
    """An :class:`h2.connection.H2Connection` for the server; see the module docstring."""

    def __init__(self, config: H2Configuration) -> None:
        super().__init__(config=config)
        #: Whether received frames are made quiet (not when someone reads h2's trace log).
        self._quiet = isinstance(config.logger, DummyLogger)
        table = self._frame_dispatch_table
        table.update({_QUIET[kind]: handler for kind, handler in list(table.items()) if kind in _QUIET})
        #: Streams held from which the next stream makes h2 walk them (see the module docstring).
        self.tidy_at = TIDY_AT
        self._closed_streams = ResetStreams()

    def _receive_frame(self, frame: Frame) -> list[Event]:
        if self._quiet:
            frame.__class__ = _QUIET.get(frame.__class__, frame.__class__)
        return super()._receive_frame(frame)

    @property
    def open_inbound_streams(self) -> int:
        """Exact (h2's walk) from ``tidy_at`` streams held or near the limit; below, an upper bound."""
        held = len(self.streams)
        if held < self.tidy_at and held < self.local_settings.max_concurrent_streams:
            return held
        count = super().open_inbound_streams
        self.tidy_at = max(TIDY_AT, 2 * count)
        return count

