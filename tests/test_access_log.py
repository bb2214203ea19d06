"""The access log: one structured line per call on ``blazerpc.access``, as text or JSON."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from blazerpc_core import BlazeApp
from blazerpc_core.observability.logformat import BatchedStreamHandler, DirectLine, JsonFormatter, TextFormatter
from blazerpc_core.testing import Connection, serve_cli

TIMEOUT = 10


class Capture(logging.Handler):
    """Collects ``blazerpc.access`` records; the line is written after the status is sent."""

    def __init__(self, expected: int) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.expected = expected
        self.enough = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if len(self.records) >= self.expected:
            self.enough.set()


@pytest.fixture
def capture() -> Any:
    logger = logging.getLogger("blazerpc.access")
    handlers: list[Capture] = []

    def attach(expected: int) -> Capture:
        handler = Capture(expected)
        logger.addHandler(handler)
        handlers.append(handler)
        return handler

    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield attach
    logger.setLevel(old_level)
    for handler in handlers:
        logger.removeHandler(handler)


def make_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("add", version="2")
    def add(a: float, b: float) -> float:
        return a + b

    @app.model("boom")
    def boom(x: int) -> int:
        raise RuntimeError("kaboom with spaces")

    return app


def drive(conn: Connection) -> None:
    conn.stub.PredictAdd(conn.pb2.AddRequest(a=1, b=2), metadata=(("x-request-id", "rid-1"),), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        conn.stub.PredictBoom(conn.pb2.BoomRequest(x=1), timeout=TIMEOUT)


def test_text_lines_name_method_model_peer_status_latency_and_request_id(
    blazerpc_serve: Any, blazerpc_connect: Any, capture: Any
) -> None:
    conn = blazerpc_connect(blazerpc_serve(make_app()))
    handler = capture(2)
    drive(conn)
    assert handler.enough.wait(TIMEOUT)
    ok, failed = (r.getMessage() for r in handler.records)
    assert ok.startswith("method=/blazerpc.InferenceService/PredictAdd model=add version=2 peer=127.0.0.1:")
    assert " status=OK latency_ms=" in ok and ok.endswith(" request_id=rid-1")
    assert "method=/blazerpc.InferenceService/PredictBoom" in failed and "status=INTERNAL" in failed
    # A message with spaces is quoted, so the line still splits into key=value fields.
    assert 'error="model \'boom\' version \'1\' raised RuntimeError: kaboom with spaces"' in failed
    fields = handler.records[0].blazerpc
    assert fields["status"] == "OK" and fields["latency_ms"] >= 0 and fields["request_id"] == "rid-1"


def test_json_lines(blazerpc_serve: Any, blazerpc_connect: Any, capture: Any) -> None:
    conn = blazerpc_connect(blazerpc_serve(make_app(), log_format="json"))
    handler = capture(2)
    drive(conn)
    assert handler.enough.wait(TIMEOUT)
    ok, failed = (json.loads(r.getMessage()) for r in handler.records)
    assert ok["method"] == "/blazerpc.InferenceService/PredictAdd"
    assert (ok["model"], ok["version"], ok["status"], ok["request_id"]) == ("add", "2", "OK", "rid-1")
    assert ok["peer"].startswith("127.0.0.1:") and isinstance(ok["latency_ms"], float)
    assert ok["error"] is None and ok["principal"] is None
    assert failed["status"] == "INTERNAL" and "kaboom" in failed["error"]
    assert failed["request_id"]  # generated when the client sent none


def test_json_formatter_puts_access_fields_at_top_level() -> None:
    record = logging.LogRecord("blazerpc.access", logging.INFO, __file__, 1, "%s", ("x",), None)
    record.blazerpc = {"method": "/p/M", "status": "OK"}
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["logger"], entry["method"], entry["status"], entry["level"]) == (
        "blazerpc.access", "/p/M", "OK", "INFO"
    )
    plain = logging.LogRecord("blazerpc.server", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    assert json.loads(JsonFormatter().format(plain))["message"] == "hello you"


def test_disabling_access_log_plugin_logs_nothing(blazerpc_serve: Any, blazerpc_connect: Any, capture: Any) -> None:
    server = blazerpc_serve(make_app(), disabled=["access-log"])
    handler = capture(1)
    drive(blazerpc_connect(server))
    server.stop(grace_period=5)  # every call has finished once the server is stopped
    assert handler.records == []


def test_cli_log_format_json_writes_one_json_object_per_line(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "from blazerpc_core import BlazeApp\n"
        "app = BlazeApp()\n"
        "@app.model('add')\n"
        "def add(a: float, b: float) -> float:\n"
        "    return a + b\n"
    )
    with serve_cli(str(app), "--log-format", "json") as server:
        with grpc.insecure_channel(server.address) as channel:
            raw = channel.unary_unary("/blazerpc.InferenceService/PredictAdd")
            raw(b"", metadata=(("x-request-id", "cli-1"),), timeout=TIMEOUT)
        assert server.stop() == 0
    entries = [json.loads(line) for line in server.lines if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "blazerpc.access"]
    assert len(access) == 1
    assert (access[0]["status"], access[0]["request_id"], access[0]["model"]) == ("OK", "cli-1", "add")


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_direct_lines_match_what_the_formatters_make_of_a_record(formatter: logging.Formatter) -> None:
    """The access log skips the LogRecord only where the line comes out the same."""
    fields = {"method": "/p/M", "status": "OK", "error": 'quoted "x"', "latency_ms": 1.5}
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0421):
        record = logging.LogRecord("blazerpc.access", logging.INFO, __file__, 1, "method=/p/M status=OK", (), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000)
        record.blazerpc = fields
        direct = formatter.direct("blazerpc.access", created, "method=/p/M status=OK", fields)  # type: ignore[attr-defined]
        assert direct == formatter.format(record)


def test_direct_lines_only_when_nothing_else_would_see_the_record() -> None:
    """A second handler, a filter or a custom format each take the record path (and see ``record.blazerpc``)."""
    root, logger = logging.getLogger("direct-test"), logging.getLogger("direct-test.access")
    root.propagate = False  # the real root logger (pytest's handlers) stays out of it
    handler = BatchedStreamHandler()
    handler.setStream(io.StringIO())
    handler.setFormatter(TextFormatter())
    root.addHandler(handler)
    direct = DirectLine(logger)
    try:
        assert direct.write("m", {})  # one batched handler with our formatter, up the tree
        handler.setFormatter(TextFormatter("%(message)s"))
        assert not direct.write("m", {})
        handler.setFormatter(JsonFormatter())
        other = Capture(1)
        logger.addHandler(other)
        assert not direct.write("m", {})
        logger.removeHandler(other)
        logger.addFilter(lambda record: True)
        assert not direct.write("m", {})
        handler.flush()
        assert handler.stream.getvalue().endswith(" INFO direct-test.access: m\n")  # type: ignore[attr-defined]
    finally:
        root.removeHandler(handler)
        handler.close()


class StalledStream(io.StringIO):
    """stderr piped to a reader that stopped: ``write`` waits until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.writing.set()
        assert self.release.wait(10)
        return super().write(text)


def test_a_slow_log_stream_never_holds_up_the_thread_that_logs() -> None:
    """Stderr piped to a stalled reader: queueing a line must not wait for the write in progress,
    batches still go out whole and in order, and one writer thread does it all (none per batch)."""

    stream = StalledStream()
    handler = BatchedStreamHandler(interval=0.01)
    handler.setStream(stream)
    handler.setFormatter(TextFormatter("%(message)s"))
    try:
        handler.write("first")
        assert stream.writing.wait(10)  # the writer thread is now stuck in write()
        queued = threading.Event()

        def log_more() -> None:
            for n in range(100):
                handler.write(f"line {n}")
            queued.set()

        threading.Thread(target=log_more, daemon=True).start()
        assert queued.wait(5), "queueing a line waited for the stalled stream"
        stream.release.set()
        deadline = time.monotonic() + 10
        while stream.getvalue().count("\n") < 101 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.getvalue().splitlines() == ["first", *(f"line {n}" for n in range(100))]
        writers = [t for t in threading.enumerate() if t.name == "blazerpc-log-writer"]
        assert len(writers) >= 1 and sum(t.is_alive() for t in writers) == len(writers)
        before = {t.ident for t in writers}
        for n in range(5):  # five more batches, each after the writer went back to waiting
            handler.write(f"later {n}")
            time.sleep(0.05)
        handler.flush()
        assert stream.getvalue().splitlines()[-5:] == [f"later {n}" for n in range(5)]
        assert {t.ident for t in threading.enumerate() if t.name == "blazerpc-log-writer"} == before
    finally:
        stream.release.set()
        handler.close()


def test_a_stalled_log_stream_never_blocks_a_warning_or_a_flood_and_says_what_it_dropped() -> None:
    """A log collector that stops reading stderr: queueing a WARNING (which hurries the writer) and
    then far more lines than may wait returns at once each time; what does not fit is dropped, not
    held in memory, and once the stream reads again a WARNING counts the dropped lines."""
    stream = StalledStream()
    handler = BatchedStreamHandler(interval=0.01, max_pending=10_200)
    handler.setStream(stream)
    handler.setFormatter(TextFormatter("%(message)s"))
    try:
        handler.write("first")
        assert stream.writing.wait(10)  # the writer is stuck in write()
        queued = threading.Event()
        lines = [f"line {n:04d} " + "x" * 91 for n in range(1000)]  # 102 bytes each with the newline

        def log_more() -> None:
            handler.write("warn", logging.WARNING)
            for line in lines:
                handler.write(line)
            queued.set()

        threading.Thread(target=log_more, daemon=True).start()
        assert queued.wait(5), "queueing a line waited for the stalled stream"
        kept = (10_200 - len("warn\n")) // 102
        stream.release.set()
        deadline = time.monotonic() + 10
        while "dropped" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.getvalue().splitlines() == [
            "first", "warn", *lines[:kept],
            f"dropped {1000 - kept} log lines: the log stream did not keep up and the server does not wait for it",
        ]
        handler.write("after")  # the stream reads again: lines are kept again
        handler.flush()
        assert stream.getvalue().splitlines()[-1] == "after"
    finally:
        stream.release.set()
        handler.close()
