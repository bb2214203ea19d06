"""The example third-party middleware package, pip-installed and served by the CLI like any plugin."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

from blazerpc_core.testing import run_cli, serve_cli

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "examples" / "blazerpc-audit-log"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("audit-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(PACKAGE)],
        check=True, capture_output=True,
    )
    return target


def test_the_audit_log_plugin_records_who_called_which_model(site, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent("""
        from blazerpc_core import BlazeApp

        app = BlazeApp()

        @app.model("add")
        def add(a: float, b: float) -> float:
            return a + b

        @app.model("boom")
        def boom(x: int) -> int:
            raise ValueError("nope")
    """))
    tokens = tmp_path / "tokens"
    tokens.write_text("analytics " + "t" * 32 + "\n")
    tokens.chmod(0o600)
    audit = tmp_path / "audit.jsonl"
    env = {"PYTHONPATH": str(site)}
    assert "audit-log" in run_cli("plugins", env=env).stdout
    help_text = run_cli("serve", "--help", env=env).stdout
    assert "--audit-log-file" in help_text
    metadata = [("authorization", "Bearer " + "t" * 32), ("x-request-id", "audit-1")]
    with serve_cli(str(app), "--audit-log-file", str(audit), "--auth-tokens-file", str(tokens), env=env) as server, \
            grpc.insecure_channel(server.address) as channel:
        add = channel.unary_unary("/blazerpc.InferenceService/PredictAdd")
        add(b"\t\x00\x00\x00\x00\x00\x00\xf0?", timeout=5, metadata=metadata)
        boom = channel.unary_unary("/blazerpc.InferenceService/PredictBoom")
        with pytest.raises(grpc.RpcError):
            boom(b"\x08\x01", timeout=5, metadata=metadata)
        with pytest.raises(grpc.RpcError):
            add(b"", timeout=5)  # no token
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["who"], e["model"], e["status"]) for e in lines][:2] == [
        ("analytics", "add", "OK"), ("analytics", "boom", "INTERNAL"),
    ]
    assert lines[0]["request_id"] == "audit-1" and lines[0]["rpc"] == "PredictAdd"
    assert lines[2]["status"] == "UNAUTHENTICATED" and lines[2]["who"].startswith("127.0.0.1:")
