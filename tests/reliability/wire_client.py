"""A raw HTTP/2 client over a plain socket (hyperframe + hpack) for the wire tests.

Real clients refuse to misbehave: they respect SETTINGS_MAX_CONCURRENT_STREAMS, never
send a length prefix that lies, never flood resets. This one sends exactly the frames a
test asks for, and records every frame the server sends back, so a test can check the
server's answer at the HTTP/2 level (RST_STREAM codes, GOAWAY frames, response headers).
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_FRAME = 16384
#: Error codes (RFC 9113 section 7).
NO_ERROR, CANCEL, REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x0, 0x8, 0x7, 0xB
#: What this client lets the server send before it must say WINDOW_UPDATE: effectively unbounded.
BIG_WINDOW = 2**31 - 1


@dataclass
class RawStream:
    """What the server sent on one stream."""

    headers: list[list[tuple[str, str]]] = field(default_factory=list)
    #: Each header block as it came, HPACK-encoded.
    blocks: list[bytes] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    reset: int | None = None
    ended: bool = False

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def header(self, name: str) -> str | None:
        """The last value of a response header or trailer called ``name``."""
        found = None
        for block in self.headers:
            for key, value in block:
                if key == name:
                    found = value
        return found

    @property
    def grpc_status(self) -> int | None:
        value = self.header("grpc-status")
        return None if value is None else int(value)

    @property
    def grpc_message(self) -> str:
        return unquote(self.header("grpc-message") or "")

    def messages(self) -> list[tuple[bool, bytes]]:
        """The gRPC messages received: (compressed flag, body as sent, still compressed if flagged)."""
        out, data = [], bytes(self.data)
        while len(data) >= 5:
            flag, size = struct.unpack(">?I", data[:5])
            out.append((flag, data[5 : 5 + size]))
            data = data[5 + size :]
        return out


def grpc_frame(body: bytes, *, compressed: bool = False) -> bytes:
    """One gRPC message: the 5-byte prefix, then the body."""
    return struct.pack(">?I", compressed, len(body)) + body


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body)


class RawH2:
    """One HTTP/2 connection to ``address`` ("host:port"), driven frame by frame."""

    def __init__(self, address: str, *, timeout: float = 10.0, handshake: bool = True) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.encoder = Encoder()
        self.decoder = Decoder(max_header_list_size=2**24)
        self.streams: dict[int, RawStream] = {}
        self.goaways: list[GoAwayFrame] = []
        self.pings: list[bytes] = []
        self.ping_acks: list[bytes] = []
        self.server_settings: dict[int, int] = {}
        self.closed = False
        self.answer_pings = True
        self.next_id = 1
        self._buffer = b""
        self._header_block: list[Frame] = []
        self._send_window = 65535
        self._stream_windows: dict[int, int] = {}
        if handshake:
            self.handshake()

    # -- sending -------------------------------------------------------------------------

    def send(self, *frames: Frame | bytes) -> None:
        self.sock.sendall(b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames))

    def handshake(self) -> None:
        settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: BIG_WINDOW,
                                              SettingsFrame.ENABLE_PUSH: 0})
        self.send(PREFACE, settings, WindowUpdateFrame(0, window_increment=BIG_WINDOW - 65535))
        self.wait(lambda: bool(self.server_settings), "the server's SETTINGS")

    def request_headers(
        self, path: str, *, metadata: Iterable[tuple[str, str]] = (), end_stream: bool = False,
        stream_id: int | None = None,
    ) -> list[bytes]:
        """The HEADERS (and CONTINUATION) frames of a gRPC request, serialized, without sending them."""
        if stream_id is None:
            stream_id = self.next_id
        self.next_id = max(self.next_id, stream_id + 2)
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "test"),
                   ("content-type", "application/grpc"), ("te", "trailers"), *metadata]
        block = self.encoder.encode(headers)
        chunks = [block[i : i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)] or [b""]
        flags = ["END_STREAM"] if end_stream else []
        frames = []
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            if index == 0:
                frame: Frame = HeadersFrame(stream_id, data=chunk, flags=flags + (["END_HEADERS"] if last else []))
            else:
                frame = ContinuationFrame(stream_id, data=chunk, flags=["END_HEADERS"] if last else [])
            frames.append(frame.serialize())
        self.streams.setdefault(stream_id, RawStream())
        self._stream_windows[stream_id] = self.server_settings.get(SettingsFrame.INITIAL_WINDOW_SIZE, 65535)
        return frames

    def request(
        self, path: str, *, metadata: Iterable[tuple[str, str]] = (), end_stream: bool = False,
        stream_id: int | None = None,
    ) -> int:
        """Send the HEADERS of a new request; returns its stream id."""
        stream_id = self.next_id if stream_id is None else stream_id
        self.send(*self.request_headers(path, metadata=metadata, end_stream=end_stream, stream_id=stream_id))
        return stream_id

    def send_data(self, stream_id: int, payload: bytes, *, end_stream: bool = False) -> None:
        """DATA frames carrying ``payload``, waiting for the server's flow-control windows as needed."""
        view = memoryview(payload)
        while True:
            allowed = min(self._send_window, self._stream_windows.get(stream_id, 65535), MAX_FRAME, len(view))
            if allowed <= 0 and len(view):
                self.wait(lambda: min(self._send_window, self._stream_windows.get(stream_id, 0)) > 0,
                          f"a flow-control window for stream {stream_id}")
                continue
            last = allowed == len(view)
            self.send(DataFrame(stream_id, data=bytes(view[:allowed]), flags=["END_STREAM"] if last and end_stream
                                else []))
            self._send_window -= allowed
            self._stream_windows[stream_id] = self._stream_windows.get(stream_id, 65535) - allowed
            view = view[allowed:]
            if last:
                return

    def data_frame(self, stream_id: int, payload: bytes, *, end_stream: bool = False) -> bytes:
        """One DATA frame, serialized, ignoring flow control (for payloads well within the windows)."""
        assert len(payload) <= MAX_FRAME
        self._send_window -= len(payload)
        self._stream_windows[stream_id] = self._stream_windows.get(stream_id, 65535) - len(payload)
        return DataFrame(stream_id, data=payload, flags=["END_STREAM"] if end_stream else []).serialize()

    def unary(self, path: str, body: bytes, *, metadata: Iterable[tuple[str, str]] = (),
              compressed: bool = False) -> int:
        """A whole unary request: HEADERS, then one message and END_STREAM."""
        stream_id = self.request(path, metadata=metadata)
        self.send_data(stream_id, grpc_frame(body, compressed=compressed), end_stream=True)
        return stream_id

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        self.send(self.reset_frame(stream_id, code))

    def reset_frame(self, stream_id: int, code: int = CANCEL) -> bytes:
        return RstStreamFrame(stream_id, error_code=code).serialize()

    # -- receiving -----------------------------------------------------------------------

    def pump(self, timeout: float | None = None) -> bool:
        """Read what the server sent (waiting up to ``timeout``); False once the connection is closed."""
        if self.closed:
            return False
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return True
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        self._buffer += data
        self._parse()
        return True

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Read until ``predicate()`` holds; fail naming ``what`` on timeout or when the server closes first."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            if not self.pump(min(left, 0.2)) and not predicate():
                raise AssertionError(f"the server closed the connection before {what}")

    def wait_closed(self, timeout: float) -> float:
        """Read until the server closes the connection; returns how long that took."""
        start = time.monotonic()
        while self.pump(min(0.2, timeout)):
            if time.monotonic() - start > timeout:
                raise AssertionError(f"the server kept the connection open for over {timeout}s")
        return time.monotonic() - start

    def response(self, stream_id: int, timeout: float | None = None) -> RawStream:
        """Read until stream ``stream_id`` ends or is reset, and return it."""
        self.wait(lambda: self.streams[stream_id].done, f"the end of stream {stream_id}", timeout)
        return self.streams[stream_id]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        self.closed = True

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _parse(self) -> None:
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
            if len(self._buffer) < 9 + length:
                return
            frame.parse_body(memoryview(self._buffer[9 : 9 + length]))
            self._buffer = self._buffer[9 + length :]
            self._receive(frame)

    def _receive(self, frame: Frame) -> None:
        stream = self.streams.setdefault(frame.stream_id, RawStream()) if frame.stream_id else None
        if isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self.server_settings.update(frame.settings)
                if SettingsFrame.INITIAL_WINDOW_SIZE in frame.settings:
                    for key in self._stream_windows:
                        self._stream_windows[key] = frame.settings[SettingsFrame.INITIAL_WINDOW_SIZE]
                self._send_quietly(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            self._header_block.append(frame)
            if "END_HEADERS" in frame.flags:
                first = self._header_block[0]
                block = b"".join(f.data for f in self._header_block)
                self._header_block = []
                assert stream is not None
                stream.blocks.append(block)
                stream.headers.append([(str(k), str(v)) for k, v in self.decoder.decode(block)])
                if "END_STREAM" in first.flags:
                    stream.ended = True
        elif isinstance(frame, DataFrame):
            assert stream is not None
            stream.data += frame.data
            if "END_STREAM" in frame.flags:
                stream.ended = True
        elif isinstance(frame, RstStreamFrame):
            assert stream is not None
            # The first reset ends the stream and says why. h2 answers the request's DATA, when it
            # arrives after that, with a second one (STREAM_CLOSED), which says nothing more.
            if stream.reset is None:
                stream.reset = frame.error_code
        elif isinstance(frame, WindowUpdateFrame):
            if frame.stream_id == 0:
                self._send_window += frame.window_increment
            else:
                self._stream_windows[frame.stream_id] = (
                    self._stream_windows.get(frame.stream_id, 65535) + frame.window_increment
                )
        elif isinstance(frame, GoAwayFrame):
            self.goaways.append(frame)
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                self.ping_acks.append(bytes(frame.opaque_data))
            else:
                self.pings.append(bytes(frame.opaque_data))
                if self.answer_pings:
                    self._send_quietly(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))

    def ack_pings(self) -> None:
        """Acknowledge every PING received so far (for a client created with ``answer_pings = False``)."""
        for opaque in self.pings:
            self._send_quietly(PingFrame(0, opaque_data=opaque, flags=["ACK"]))
        self.pings = []

    def _send_quietly(self, frame: Frame) -> None:
        with contextlib.suppress(OSError):
            self.send(frame)
