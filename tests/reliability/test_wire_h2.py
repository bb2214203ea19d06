"""The server's h2 connection skips three costs without changing what h2 decides.

``WireH2Connection`` gives received frames a cheap ``repr`` (h2 formats every frame for a
trace log that is off), skips h2's walk over every stream it holds while the number held
cannot reach the stream limit, and remembers only the last reset streams instead of the
last 65,536 closed ones. Tried: the hard stream cap at its exact boundary, in one read,
over a real socket; ten thousand calls on one connection (closed streams must still be
dropped); fifty calls in flight (walks must stay rare and closed streams few); a real
trace logger (it must still see whole frames); frames arriving on streams reset, ended,
and reset long ago, against plain h2; thousands of resets (the memory stays bounded);
a client that resets a call and keeps sending on it, over a real socket.
"""

from __future__ import annotations

import threading

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import Event
from h2.exceptions import ProtocolError
from hpack import Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import DataFrame, Frame, HeadersFrame, RstStreamFrame, SettingsFrame

from blazerpc_core.server.wire.h2 import RESETS_KEPT, TIDY_AT, WireH2Connection
from blazerpc_core.testing import compile_stubs, start_server
from tests.reliability.test_wire_streams import DOUBLE, HOLD, make_app
from tests.reliability.wire_client import CANCEL, REFUSED_STREAM, RawH2, grpc_frame

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


# -- closed streams ------------------------------------------------------------------------

REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/x"), (":authority", "t")]


def _trailers_on(stream_id: int) -> bytes:
    """A HEADERS block ending ``stream_id``, which the client's own h2 would refuse to send.

    Never indexed, so it leaves both sides' HPACK tables as they were."""
    frame = HeadersFrame(stream_id)
    frame.data = Encoder().encode([NeverIndexedHeaderTuple("x-late", "1")])
    frame.flags.add("END_STREAM")
    frame.flags.add("END_HEADERS")
    return frame.serialize()


def _data_on(stream_id: int) -> bytes:
    frame = DataFrame(stream_id)
    frame.data = b"late"
    return frame.serialize()


def _reset_by_client(client: H2Connection, server: H2Connection) -> int:
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, REQUEST)
    client.reset_stream(stream_id, ErrorCodes.CANCEL)
    server.receive_data(client.data_to_send())
    return stream_id


def _ended(client: H2Connection, server: H2Connection) -> int:
    stream_id = client.get_next_available_stream_id()
    _one_call(client, server)  # type: ignore[arg-type]
    return stream_id


def _tidy(server: H2Connection) -> None:
    """h2's own walk: closed streams leave ``streams`` for its memory of closed streams."""
    H2Connection.open_inbound_streams.fget(server)  # type: ignore[attr-defined]
    assert not server.streams


def _late_frame(server: H2Connection, frame: bytes) -> str:
    """What a frame arriving on a closed stream does: a stream error, or the connection's end."""
    try:
        server.receive_data(frame)
    except ProtocolError as exc:
        return f"connection error {ErrorCodes(exc.error_code).name}"
    sent = server.data_to_send()
    return "stream error" if RstStreamFrame.type in _frame_types(sent) else "ignored"


def _frame_types(data: bytes) -> list[int]:
    types, offset = [], 0
    while offset + 9 <= len(data):
        types.append(data[offset + 3])
        offset += 9 + int.from_bytes(data[offset:offset + 3], "big")
    return types


@pytest.mark.parametrize("kind", [H2Connection, WireH2Connection])
def test_late_frames_on_closed_streams_are_decided_as_plain_h2_decides(kind: type[H2Connection]) -> None:
    """HEADERS on a stream the peer reset is a stream error (they were in flight); on a stream
    that ended, a connection error. Only the code of the last differs once h2 tidied the
    stream away: plain h2 still knows it ended (STREAM_CLOSED), the server no longer does,
    and an id it has seen is simply too low (PROTOCOL_ERROR, RFC 9113 §5.1.1). DATA is a
    stream error on any closed stream, remembered or not."""
    outcomes = {}
    for tidy in (False, True):
        for how in ("reset", "ended"):
            for frame in (_trailers_on, _data_on):
                client, server = _pair(H2Configuration(client_side=False), kind)  # type: ignore[arg-type]
                stream_id = _reset_by_client(client, server) if how == "reset" else _ended(client, server)
                _ended(client, server)
                if tidy:
                    _tidy(server)
                outcomes[("tidied" if tidy else "held", how, frame.__name__)] = _late_frame(server, frame(stream_id))
    forgotten_end = "connection error STREAM_CLOSED" if kind is H2Connection else "connection error PROTOCOL_ERROR"
    assert outcomes == {
        ("held", "reset", "_trailers_on"): "stream error",
        ("held", "reset", "_data_on"): "stream error",
        ("held", "ended", "_trailers_on"): "connection error STREAM_CLOSED",
        ("held", "ended", "_data_on"): "stream error",
        ("tidied", "reset", "_trailers_on"): "stream error",
        ("tidied", "reset", "_data_on"): "stream error",
        ("tidied", "ended", "_trailers_on"): forgotten_end,
        ("tidied", "ended", "_data_on"): "stream error",
    }


def test_the_memory_of_closed_streams_keeps_only_the_last_resets() -> None:
    """h2 kept 65,536 closed streams per connection (about 11 MB, walked by every full garbage
    collection); the server keeps no normal end and at most RESETS_KEPT resets, the newest."""
    client, server = _pair(H2Configuration(client_side=False))
    for _ in range(3 * TIDY_AT):
        _ended(client, server)
    _tidy(server)
    assert len(server._closed_streams) == 0
    resets = [_reset_by_client(client, server) for _ in range(RESETS_KEPT + 200)]
    for _ in range(3 * TIDY_AT):
        _ended(client, server)
    _tidy(server)
    assert list(server._closed_streams) == resets[-RESETS_KEPT:]
    # A recent reset is still a stream error; one long forgotten ends the connection, as
    # RFC 9113 allows (an endpoint may bound how long it ignores frames on reset streams).
    assert _late_frame(server, _trailers_on(resets[-1])) == "stream error"
    assert _late_frame(server, _trailers_on(resets[0])) == "connection error PROTOCOL_ERROR"


def test_a_client_that_resets_a_call_and_keeps_sending_on_it_keeps_its_connection() -> None:
    """Over a real socket: trailers on a call the client reset, sent after enough other calls
    that the server tidied the reset stream away, are a stream error; the connection serves on."""
    release = threading.Event()
    release.set()
    server = start_server(make_app(release))
    pb2 = compile_stubs(server.proto_text).pb2
    try:
        with RawH2(server.address) as client:
            reset = client.request(HOLD)
            client.reset(reset, CANCEL)
            for x in range(2 * TIDY_AT):
                call = client.unary(DOUBLE, pb2.DoubleRequest(x=x).SerializeToString())
                assert client.response(call).grpc_status == 0
            client.send(_trailers_on(reset))
            call = client.unary(DOUBLE, pb2.DoubleRequest(x=21).SerializeToString())
            answer = client.response(call)
            assert pb2.DoubleResponse.FromString(answer.messages()[0][1]).result == 42
            assert not client.goaways and not client.closed
    finally:
        server.stop(grace_period=5)
