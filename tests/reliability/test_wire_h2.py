"""The server's h2 connection skips two per-frame costs without changing what h2 decides.

``WireH2Connection`` gives received frames a cheap ``repr`` (h2 formats every frame for a
trace log that is off) and skips h2's walk over every stream it holds while the number
held cannot reach the stream limit. Tried: the hard stream cap at its exact boundary, in
one read, over a real socket; ten thousand calls on one connection (closed streams must
still be dropped); fifty calls in flight (walks must stay rare and closed streams few); a
real trace logger (it must still see whole frames).
"""

from __future__ import annotations

import threading

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import Event
from hyperframe.frame import Frame, SettingsFrame

from blazerpc_core.server.wire.h2 import TIDY_AT, WireH2Connection
from blazerpc_core.testing import compile_stubs, start_server
from tests.reliability.test_wire_streams import DOUBLE, HOLD, make_app
from tests.reliability.wire_client import REFUSED_STREAM, RawH2, grpc_frame

PROTOCOL_ERROR = 1


def _open_streams_in_one_write(client: RawH2, count: int, body: bytes) -> list[int]:
    frames, ids = [], []
    for _ in range(count):
        stream_id = client.next_id
        frames += client.request_headers(HOLD, stream_id=stream_id)
        frames.append(client.data_frame(stream_id, grpc_frame(body), end_stream=True))
        ids.append(stream_id)
    client.send(*frames)
    return ids


def test_at_the_hard_cap_in_one_read_the_connection_lives_and_one_past_it_goes() -> None:
    """With 2 concurrent streams the hard cap is 20: 20 streams opened in one read, after 15
    calls whose closed streams h2 still holds (35 held, 20 open), keep the connection; 21
    fail it, as in h2 without the shortcut."""
    release = threading.Event()
    server = start_server(make_app(release), max_concurrent_streams=2)
    pb2 = compile_stubs(server.proto_text).pb2
    body = pb2.HoldRequest(x=7).SerializeToString()
    try:
        assert TIDY_AT > 20
        with RawH2(server.address) as client:
            assert client.server_settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 2
            for x in range(15):  # closed streams h2 still holds: they must not count as open
                call = client.unary(DOUBLE, pb2.DoubleRequest(x=x).SerializeToString())
                assert client.response(call).grpc_status == 0
            ids = _open_streams_in_one_write(client, 20, body)
            release.set()
            served = [client.response(s) for s in ids[:2]]
            assert all(r.grpc_status == 0 for r in served)
            assert all(client.response(s).reset == REFUSED_STREAM for s in ids[2:])
            assert not client.goaways and not client.closed
        release.clear()
        with RawH2(server.address) as client:
            _open_streams_in_one_write(client, 21, body)
            client.wait_closed(5)
            assert [g.error_code for g in client.goaways] == [PROTOCOL_ERROR]
        release.set()
        with RawH2(server.address) as client:  # the server is unharmed
            call = client.unary(DOUBLE, pb2.DoubleRequest(x=4).SerializeToString())
            assert pb2.DoubleResponse.FromString(client.response(call).messages()[0][1]).result == 8
    finally:
        release.set()
        server.stop(grace_period=5)


class _Seen(WireH2Connection):
    """The server's connection, noting each received frame's repr as h2 would log it."""

    def __init__(self, config: H2Configuration) -> None:
        super().__init__(config)
        self.reprs: list[str] = []

    def _receive_frame(self, frame: Frame) -> list[Event]:
        events = super()._receive_frame(frame)
        self.reprs.append(repr(frame))
        return events


def _pair(server_config: H2Configuration, kind: type[_Seen] = _Seen) -> tuple[H2Connection, _Seen]:
    client = H2Connection(H2Configuration(client_side=True))
    server = kind(server_config)
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def _one_call(client: H2Connection, server: _Seen) -> None:
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, [(":method", "POST"), (":scheme", "http"), (":path", "/x"),
                                    (":authority", "t")], end_stream=True)
    server.receive_data(client.data_to_send())
    server.send_headers(stream_id, [(":status", "200")], end_stream=True)
    client.receive_data(server.data_to_send())


def test_ten_thousand_calls_on_one_connection_leave_at_most_tidy_at_streams_held() -> None:
    client, server = _pair(H2Configuration(client_side=False))
    held = []
    for _ in range(10_000):
        _one_call(client, server)
        held.append(len(server.streams))
    assert max(held) <= TIDY_AT
    assert 0 < server.open_inbound_streams <= TIDY_AT  # an upper bound, under the limit
    assert H2Connection.open_inbound_streams.fget(server) == 0  # h2's walk: all closed
    assert not server.streams  # and dropped


class _Walks(_Seen):
    """The server's connection, counting h2's walks over its streams."""

    walks = 0

    def _open_streams(self, remainder: int) -> int:
        self.walks += 1
        return super()._open_streams(remainder)


def test_with_fifty_calls_in_flight_h2_walks_rarely_and_holds_at_most_twice_the_open_streams() -> None:
    """A fixed mark under the number in flight walked every stream for every new one."""
    client, server = _pair(H2Configuration(client_side=False), _Walks)
    assert isinstance(server, _Walks)
    in_flight: list[int] = []
    held = []
    for _ in range(2_000):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, [(":method", "POST"), (":scheme", "http"), (":path", "/x"),
                                        (":authority", "t")], end_stream=True)
        server.receive_data(client.data_to_send())
        in_flight.append(stream_id)
        if len(in_flight) == 50:  # the oldest call is answered
            server.send_headers(in_flight.pop(0), [(":status", "200")], end_stream=True)
            client.receive_data(server.data_to_send())
        held.append(len(server.streams))
    assert server.walks < 2_000 / 40  # about once per 50 new streams, not once per stream
    assert max(held) <= 2 * 50 + 1
    assert H2Connection.open_inbound_streams.fget(server) == len(in_flight)


class _Recorder:
    """A logger h2 accepts, keeping what it traces."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, fmtstr: str, *args: object) -> None:
        return None

    def trace(self, fmtstr: str, *args: object) -> None:
        self.lines.append(fmtstr % args)


def test_frames_keep_their_full_repr_for_a_real_trace_logger_and_are_quiet_otherwise() -> None:
    recorder = _Recorder()
    client, server = _pair(H2Configuration(client_side=False, logger=recorder))
    _one_call(client, server)
    traced = [line for line in recorder.lines if line.startswith("Received frame: HeadersFrame")]
    assert traced and "data=<hex:" in traced[0]  # hyperframe's own repr
    client, server = _pair(H2Configuration(client_side=False))
    _one_call(client, server)
    assert "HeadersFrame(stream_id=1)" in server.reprs
    assert all("flags" not in line for line in server.reprs)
