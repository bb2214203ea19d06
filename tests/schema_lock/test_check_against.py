"""``blazerpc proto --check-against OLD``: exit codes for a table of edits, against an old .proto and an old lock."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from blazerpc_core import cli
from blazerpc_core.testing import run_cli
from tests.schema_lock.sources import SUB, SUB_INSERTED, write_app

ENUM = """
class Color(enum.Enum):
    RED = 1
    BLUE = 2

@app.model("paint")
def paint(c: Color) -> str:
    return c.name
"""
OTHER = """
@app.model("other")
def other(x: float) -> float:
    return x
"""
SCALE_V1 = """
@app.model("scale", version="1")
def scale_v1(x: float) -> float:
    return x * 2
"""
SCALE_V2 = """
@app.model("scale", version="2")
def scale_v2(x: float, factor: float = 3.0) -> float:
    return x * factor
"""
ABC = """
@app.model("sub")
def sub(a: float, b: float, c: float) -> float:
    return a - b
"""

#: (edit, old model files, new model files, exit against the old .proto, exit against the old lock)
EDITS = [
    ("new optional field", [SUB], [SUB.replace("b: float)", "b: float, c: float = 0.0)")], 0, 0),
    ("field gains a default", [SUB], [SUB.replace("b: float)", "b: float = 1.0)")], 0, 0),
    ("new model", [SUB], [SUB, OTHER], 0, 0),
    ("new version rpc", [SCALE_V1], [SCALE_V1, SCALE_V2], 0, 0),
    ("new enum value at the end", [ENUM], [ENUM.replace("BLUE = 2", "BLUE = 2\n    GREEN = 3")], 0, 0),
    ("field removed", [SUB], [SUB.replace(", b: float", "").replace(" - b", "")], 0, 0),
    ("parameter inserted in the middle", [SUB], [SUB_INSERTED], 1, 0),
    ("removed field's number taken by a new one", [ABC], [ABC.replace("c: float", "d: float")], 1, 0),
    ("field type changed", [SUB], [SUB.replace("b: float", "b: str")], 1, 1),
    ("scalar became repeated", [SUB], [SUB.replace("b: float", "b: list[float]").replace(" - b", "")], 1, 1),
    ("response type changed", [SUB], [SUB.replace("-> float", "-> str").replace("a - b", "'x'")], 1, 1),
    ("model removed", [SUB, OTHER], [SUB], 1, 1),
    ("version removed", [SCALE_V1, SCALE_V2], [SCALE_V2], 1, 1),
    ("streaming shape changed", [SUB], [SUB.replace("-> float", "-> Iterator[float]").replace("return", "yield")],
     1, 1),
    ("enum member inserted", [ENUM], [ENUM.replace("RED = 1", "RED = 1\n    GREEN = 3")], 1, 1),
]


def blazerpc(*args: str) -> tuple[int, str]:
    """The command line in this process (fast enough for a table): exit code and everything printed."""
    group = cli.make_cli(list(args))
    result = CliRunner().invoke(group, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def reference(tmp_path: Path, *bodies: str) -> Path:
    """``blazerpc proto --lock`` over the old models: the directory with the old .proto and lock."""
    old = write_app(tmp_path / "old" / "app_old.py", *bodies)
    code, output = blazerpc("proto", str(old), "-o", str(tmp_path / "ref"), "--lock",
                            str(tmp_path / "ref" / "blaze_service.lock"))
    assert code == 0, output
    return tmp_path / "ref"


@pytest.mark.parametrize(("edit", "old", "new", "against_proto", "against_lock"), EDITS, ids=[e[0] for e in EDITS])
def test_check_against_exit_codes(tmp_path, monkeypatch, edit, old, new, against_proto, against_lock):
    ref = reference(tmp_path, *old)
    app = write_app(tmp_path / "new" / "app_new.py", *new)
    monkeypatch.chdir(app.parent)
    code, output = blazerpc("proto", str(app), "--check-against", str(ref / "blaze_service.proto"))
    assert code == against_proto, output
    code, output = blazerpc("proto", str(app), "--check-against", str(ref / "blaze_service.lock"))
    assert code == against_lock, output
    assert [p.name for p in app.parent.iterdir() if p.name != "__pycache__"] == [app.name]  # a check writes nothing


def test_each_breaking_change_is_listed_with_the_model_and_the_field(tmp_path):
    ref = reference(tmp_path, SUB, OTHER)
    app = write_app(tmp_path / "new" / "app_new.py", SUB_INSERTED.replace("b: float", "b: str").replace(" - b", ""))
    code, output = blazerpc("proto", str(app), "--check-against", str(ref / "blaze_service.lock"))
    assert code == 1
    sub = "model 'sub' version '1' (rpc PredictSub) request"
    assert f"BREAKING  {sub}: field 'b' changed type double → string" in output
    assert "BREAKING  model 'other' version '1' (rpc PredictOther): is no longer served" in output
    assert "ok  model 'sub' version '1' (rpc PredictSub) request: new field 'offset' double = 3" in output
    assert "2 breaking change(s) against" in output


def test_reserved_numbers_and_names_of_the_old_schema_count(tmp_path):
    ref = reference(tmp_path, ABC)
    two = write_app(tmp_path / "two" / "app_two.py", ABC.replace(", c: float", ""))
    lock = str(ref / "blaze_service.lock")
    assert blazerpc("proto", str(two), "-o", str(ref), "--lock", lock)[0] == 0
    assert 'reserved "c";' in (ref / "blaze_service.proto").read_text()
    d_instead = write_app(tmp_path / "d" / "app_d.py", ABC.replace("c: float", "d: float"))
    code, output = blazerpc("proto", str(d_instead), "--check-against", str(ref / "blaze_service.proto"))
    assert code == 1 and "new field 'd' double takes reserved number 3" in output
    assert blazerpc("proto", str(d_instead), "--check-against", lock)[0] == 0  # the lock numbers d 4
    c_as_text = write_app(tmp_path / "t" / "app_t.py", ABC.replace("c: float", "c: str"))
    for old in (str(ref / "blaze_service.proto"), lock):
        code, output = blazerpc("proto", str(c_as_text), "--check-against", old)
        assert code == 1, output
    c_back = write_app(tmp_path / "b" / "app_b.py", ABC)
    assert blazerpc("proto", str(c_back), "--check-against", lock)[0] == 0


def test_lock_refuses_breaking_changes_unless_allowed_and_then_records_them(tmp_path):
    ref = reference(tmp_path, SUB)
    lock = str(ref / "blaze_service.lock")
    before = Path(lock).read_text()
    app = write_app(tmp_path / "new" / "app_new.py", SUB.replace("b: float", "b: str").replace(" - b", ""))
    code, output = blazerpc("proto", str(app), "-o", str(ref), "--lock", lock)
    assert code == 1 and "field 'b' changed type double → string" in output
    assert Path(lock).read_text() == before
    code, output = blazerpc("proto", str(app), "-o", str(ref), "--lock", lock, "--allow-breaking")
    assert code == 0, output
    assert "  field 2 b string\n" in Path(lock).read_text()


def test_the_real_command_exits_non_zero_for_ci_and_zero_when_compatible(tmp_path):
    ref = reference(tmp_path, SUB)
    breaking = write_app(tmp_path / "x" / "app.py", SUB_INSERTED)
    done = run_cli("proto", str(breaking), "--check-against", str(ref / "blaze_service.proto"))
    assert done.returncode == 1 and "field 'b' moved from number 2 to 3" in done.stdout
    done = run_cli("proto", str(breaking), "--check-against", str(ref / "blaze_service.lock"))
    assert done.returncode == 0, done.stderr


def test_a_proto_needs_grpcio_tools_and_says_so(tmp_path, monkeypatch):
    ref = reference(tmp_path, SUB)
    app = write_app(tmp_path / "new" / "app_new.py", SUB)
    monkeypatch.setitem(sys.modules, "grpc_tools", None)
    code, output = blazerpc("proto", str(app), "--check-against", str(ref / "blaze_service.proto"))
    assert code == 1
    assert "needs grpcio-tools (pip install grpcio-tools), or compare against a schema lock" in output
