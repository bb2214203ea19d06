"""How response trailers use the connection's HPACK table: request ids never enter it, error messages do.

Measured before: every response's ``x-request-id`` trailer was indexed, so the server's
header table filled with ids nobody reuses (53 entries after 50 calls), each one evicting
a useful entry, and every header the server sent was looked up through all of them
(HPACK's search is linear): ~20 us of server CPU per call at 64 clients. Error messages,
on the other hand, mostly repeat (an overloaded model refuses thousands of calls a second
with the same text): indexed, a repeat costs one byte and no Huffman coding; never
indexed, overload goodput fell from 0.98 to 0.88 (``benchmarks/bench_overload.py``).
"""

from __future__ import annotations

from blazerpc_core import BlazeApp
from blazerpc_core.testing import compile_stubs, start_server
from tests.reliability.wire_client import RawH2

ADD = "/blazerpc.InferenceService/PredictAdd"
REFUSAL = "negative numbers are refused"


def test_request_ids_are_never_indexed_and_a_repeated_error_message_is() -> None:
    app = BlazeApp()

    @app.model("add")
    def add(a: float, b: float) -> float:
        if a < 0:
            raise ValueError(REFUSAL)
        return a + b

    server = start_server(app)
    pb2 = compile_stubs(server.proto_text).pb2
    try:
        with RawH2(server.address) as client:
            ids, messages = set(), []
            for i in range(40):
                body = pb2.AddRequest(a=float(i if i % 2 else -i - 1), b=1.0).SerializeToString()
                answer = client.response(client.unary(ADD, body))
                request_id = answer.header("x-request-id")
                ids.add(request_id)
                # A fresh id is sent as plain octets: Huffman-coding it cost more than it saved.
                assert request_id is not None and request_id.encode() in answer.blocks[-1]
                if answer.grpc_status:
                    messages.append(answer.grpc_message)
            table = list(client.decoder.header_table.dynamic_entries)
        assert len(ids) == 40 and None not in ids, "every answer carries its own request id"
        assert len(messages) == 20 and all(REFUSAL in m for m in messages), messages
        names = [name for name, _ in table]
        assert b"x-request-id" not in names, table
        assert names.count(b"grpc-message") == 1, f"the repeated message is indexed once: {table}"
        assert len(table) < 10, f"the server indexed per-call values: {table}"
    finally:
        server.stop()
