"""Remembered HPACK blocks code exactly as hpack would, whatever the peer does to the table.

``WireDecoder`` and ``WireEncoder`` reuse the coding of a block they saw while the
connection's header table is unchanged. Tried: a differential fuzz against plain hpack
(random header lists drawn from a small pool so blocks repeat, never-indexed values,
table resizes in both directions, limits changed between blocks, and stale blocks
replayed after the table moved, which hpack must refuse); a peer that shrinks the
server's table with SETTINGS mid-connection (the next response must carry the size
update, or the client's decoder fails); a peer that replays a remembered block after
emptying its table (a compression error, as without the memo); many distinct blocks
(the memo stays bounded); all over real sockets where a server is involved.
"""

from __future__ import annotations

import threading
from typing import Any

from hpack import Decoder, Encoder, HPACKError, NeverIndexedHeaderTuple
from hpack.table import HeaderTable
from hyperframe.frame import HeadersFrame, SettingsFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blazerpc_core.server.wire.header_blocks import MEMO_BLOCK_BYTES, MEMO_BLOCKS, WireDecoder, WireEncoder
from blazerpc_core.testing import compile_stubs, start_server
from tests.reliability.test_wire_streams import DOUBLE, make_app
from tests.reliability.wire_client import RawH2, RawStream, grpc_frame

_NAMES = ["content-type", "x-a", "x-b", ":path", "grpc-status"]
_VALUES = ["0", "application/grpc", "v1", "v2", "a longer value that takes room in the table"]
_HEADER = st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES), st.booleans())
#: One step: encode a header list (never-indexed where the flag says), or resize the table.
_STEP = st.one_of(
    st.lists(_HEADER, min_size=0, max_size=6).map(lambda headers: ("block", headers)),
    st.sampled_from([0, 64, 256, 4096]).map(lambda size: ("resize", size)),
    st.sampled_from([1, 2, 3]).map(lambda back: ("replay", back)),
    st.sampled_from([100, 4096]).map(lambda limit: ("limits", limit)),
)


def _headers(spec: list[tuple[str, str, bool]]) -> list[Any]:
    return [NeverIndexedHeaderTuple(n, v) if never else (n, v) for n, v, never in spec]


def _as_documented(encoder: Encoder, headers: list[Any]) -> bytes:
    """hpack's block with WireEncoder's choices: never-indexed values at the end without
    Huffman coding; with one before other headers, the whole block without it."""
    unique = [type(header) is NeverIndexedHeaderTuple for header in headers]
    if True in unique and False not in unique[unique.index(True):]:
        first = unique.index(True)
        return encoder.encode(headers[:first]) + encoder.encode(headers[first:], huffman=False)
    return encoder.encode(headers, huffman=True not in unique)


def _flagged(headers: Any) -> list[tuple[str, str, bool]]:
    """Each decoded header with whether it came as never indexed (an exact table match comes as indexed)."""
    return [(header[0], header[1], type(header) is NeverIndexedHeaderTuple) for header in headers]


def _outcome(decoder: Decoder, block: bytes) -> object:
    try:
        return list(decoder.decode(block, raw=True))
    except HPACKError as exc:
        return type(exc)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(steps=st.lists(_STEP, min_size=1, max_size=40))
def test_remembered_blocks_code_exactly_as_hpack_does(steps: list[tuple[str, Any]]) -> None:
    """Step for step: each decoder's headers or error equal plain hpack's; each encoder's
    bytes equal hpack's with the Huffman choices WireEncoder documents; and its peer decodes
    the same headers, never-indexed flags and table as the peer of plain hpack."""
    plain_encoder, spec_encoder, wire_encoder = Encoder(), Encoder(), WireEncoder()
    plain_peer, wire_peer = Decoder(), Decoder()  # what the client decodes with
    plain_decoder, wire_decoder = Decoder(), WireDecoder()
    sent: list[bytes] = []
    for kind, arg in steps:
        if kind == "block":
            block = plain_encoder.encode(_headers(arg))
            wire_block = wire_encoder.encode(iter(_headers(arg)))
            assert wire_block == _as_documented(spec_encoder, _headers(arg))
            decoded = _flagged(wire_peer.decode(wire_block))
            assert decoded == _flagged(plain_peer.decode(block))
            assert [(n, v) for n, v, _ in decoded] == [(n, v) for n, v, _ in arg]
            for ours, theirs in ((wire_encoder, plain_encoder), (wire_peer, plain_peer)):
                assert ours.header_table.dynamic_entries == theirs.header_table.dynamic_entries
            sent.append(block)
        elif kind == "resize":  # the peer's SETTINGS_HEADER_TABLE_SIZE: the next block says so
            for encoder in (plain_encoder, spec_encoder, wire_encoder):
                encoder.header_table_size = arg
            plain_peer.max_allowed_table_size = wire_peer.max_allowed_table_size = max(arg, 4096)
            continue
        elif kind == "limits":
            for decoder in (plain_decoder, wire_decoder):
                decoder.max_header_list_size = decoder.max_allowed_table_size = arg
            continue
        elif sent:  # a hostile peer sends an earlier block again, whatever the table is now
            block = sent[-min(arg, len(sent))]
        else:
            continue
        assert _outcome(wire_decoder, block) == _outcome(plain_decoder, block)


def test_the_memos_stay_bounded_and_keep_only_short_blocks_that_leave_the_table_alone() -> None:
    encoder, decoder = Encoder(), WireDecoder()
    static = HeaderTable.STATIC_TABLE
    for index in range(1000):  # distinct all-indexed blocks (two static entries each)
        headers = [static[index % len(static)], static[index // len(static)]]
        assert decoder.decode(encoder.encode(headers), raw=True) == headers
        assert len(decoder._memo) <= MEMO_BLOCKS
    decoder._memo.clear()
    added = encoder.encode([("x-new", "1")])  # a literal added to the table
    assert decoder.decode(added) == [("x-new", "1")] and not decoder._memo
    long_block = encoder.encode([(":method", "GET")] * (MEMO_BLOCK_BYTES + 1))
    assert len(decoder.decode(long_block)) == MEMO_BLOCK_BYTES + 1 and not decoder._memo
    repeat = encoder.encode([("x-new", "1")])
    assert decoder.decode(repeat) == [("x-new", "1")] and len(decoder._memo) == 1

    wire_encoder = WireEncoder()
    wire_encoder.encode([("x-id", "1")])  # adds to the table
    assert not wire_encoder._memo
    wire_encoder.encode([("x-id", "1")])
    assert len(wire_encoder._memo) == 1
    for request_id in ("a1", "a2", "a3"):  # the rest of the block is kept, never the unique value
        wire_encoder.encode([("grpc-status", "0"), NeverIndexedHeaderTuple("x-request-id", request_id)])
    assert len(wire_encoder._memo) == 2
    assert not any("x-request-id" in str(key) for key in wire_encoder._memo)


def _double(client: RawH2, pb2: Any, x: int, metadata: tuple[tuple[str, str], ...] = ()) -> int:
    call = client.unary(DOUBLE, pb2.DoubleRequest(x=x).SerializeToString(), metadata=metadata)
    response = client.response(call)
    assert response.grpc_status == 0, response.headers
    return int(pb2.DoubleResponse.FromString(response.messages()[0][1]).result)


def test_a_client_that_moves_the_tables_mid_connection_still_gets_every_answer() -> None:
    """Repeated blocks between new metadata, the client's own table emptied, and the server's
    table shrunk to nothing by SETTINGS: every answer decodes, and each response after the
    shrink carries the size update (the client's decoder refuses the block otherwise)."""
    release = threading.Event()
    release.set()
    server = start_server(make_app(release))
    pb2 = compile_stubs(server.proto_text).pb2
    try:
        with RawH2(server.address) as client:
            for x in range(5):  # the same request block, remembered from the second call
                assert _double(client, pb2, x) == 2 * x
            for x in range(5):  # each adds to both tables, shifting every index
                assert _double(client, pb2, x, (("x-tag", f"t{x}"),)) == 2 * x
                assert _double(client, pb2, x) == 2 * x
            client.encoder.header_table_size = 0  # the client's next block empties the server's decoder table
            assert _double(client, pb2, 7) == 14
            client.encoder.header_table_size = 4096
            for x in range(3):
                assert _double(client, pb2, x) == 2 * x
            client.send(SettingsFrame(0, settings={SettingsFrame.HEADER_TABLE_SIZE: 0}))
            client.decoder.max_allowed_table_size = 0  # a response encoded against the old table fails here
            for x in range(3):
                assert _double(client, pb2, x) == 2 * x
            assert client.decoder.header_table_size == 0
            assert not client.goaways and not client.closed
    finally:
        server.stop(grace_period=5)


def test_a_remembered_block_replayed_after_its_entries_are_gone_is_a_compression_error() -> None:
    release = threading.Event()
    release.set()
    server = start_server(make_app(release))
    pb2 = compile_stubs(server.proto_text).pb2
    body = grpc_frame(pb2.DoubleRequest(x=3).SerializeToString())
    try:
        with RawH2(server.address) as client:
            _double(client, pb2, 1)
            _double(client, pb2, 2)
            block = client.request_headers(DOUBLE)[0][9:]  # all indexed now: the server remembers it
            client.next_id -= 2
            for _ in range(2):
                stream_id = client.next_id
                client.next_id += 2
                client.streams[stream_id] = RawStream()
                client.send(HeadersFrame(stream_id, data=block, flags=["END_HEADERS"]),
                            client.data_frame(stream_id, body, end_stream=True))
                assert client.response(stream_id).grpc_status == 0
            client.encoder.header_table_size = 0  # empties the server's table...
            assert _double(client, pb2, 3) == 6
            client.send(HeadersFrame(client.next_id, data=block, flags=["END_HEADERS"]))  # ...so this names nothing
            client.wait_closed(5)
            assert client.goaways and client.goaways[-1].error_code != 0
        with RawH2(server.address) as client:  # the server is unharmed
            assert _double(client, pb2, 4) == 8
    finally:
        server.stop(grace_period=5)
