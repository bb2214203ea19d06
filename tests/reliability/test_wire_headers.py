"""Response header values that differ on every call never enter the connection's HPACK table.

Measured before: every response's ``x-request-id`` trailer was indexed, so the server's
header table filled with ids nobody reuses (53 entries after 50 calls), each one evicting
a useful entry, and every header the server sent was looked up through all of them
(HPACK's search is linear): ~20 us of server CPU per call at 64 clients.
"""

from __future__ import annotations

from blazerpc_core import BlazeApp
from blazerpc_core.testing import compile_stubs, start_server
from tests.reliability.wire_client import RawH2

ADD = "/blazerpc.InferenceService/PredictAdd"


def test_request_ids_and_error_messages_are_sent_never_indexed() -> None:
    app = BlazeApp()

    @app.model("add")
    def add(a: float, b: float) -> float:
        if a < 0:
            raise ValueError(f"a is negative: {a}")  # a message that differs per call
        return a + b

    server = start_server(app)
    pb2 = compile_stubs(server.proto_text).pb2
    try:
        with RawH2(server.address) as client:
            ids, messages = set(), set()
            for i in range(40):
                body = pb2.AddRequest(a=float(i if i % 2 else -i - 1), b=1.0).SerializeToString()
                answer = client.response(client.unary(ADD, body))
                ids.add(answer.header("x-request-id"))
                messages.add(answer.grpc_message or None)
            table = client.decoder.header_table.dynamic_entries
            indexed = {name for name, _ in table}
        assert len(ids) == 40 and None not in ids, "every answer carries its own request id"
        assert len(messages) > 20, "the failing calls' messages differ"
        assert b"x-request-id" not in indexed and b"grpc-message" not in indexed, indexed
        assert len(table) < 10, f"the server indexed per-call values: {list(table)}"
    finally:
        server.stop()
