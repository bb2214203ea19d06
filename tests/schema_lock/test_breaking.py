"""Each kind of breaking change is refused when a server starts with a lock, naming the model, field and types."""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Iterator

import pytest

from blazerpc_core import BlazeApp, ServeSettings, build_server
from blazerpc_core.build import assemble
from blazerpc_core.schema.compat import BreakingChanges
from blazerpc_core.schema.lock import write_lock
from blazerpc_core.schema.proto_text import render_proto
from blazerpc_core.testing import run_cli
from tests.schema_lock.sources import SUB, write_app


def lock_for(app: BlazeApp, path, previous=None):
    """What ``blazerpc proto --lock path`` writes for ``app`` (over the lock at ``previous``)."""
    assembly = assemble(app, load_entry_points=False, settings=ServeSettings(schema_lock=previous and str(previous)))
    numbering = assembly.numbering()
    schema = assembly.schema(numbering.apply)
    numbering.remember(schema.file, assembly.registry.rpcs())
    write_lock(numbering.promised, path)
    return path


def start(app: BlazeApp, lock, **settings):
    return build_server(app, ServeSettings(port=0, schema_lock=str(lock), **settings), load_entry_points=False)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Color2(enum.Enum):
    RED = 1
    GREEN = 3
    BLUE = 2


@dataclasses.dataclass
class Box:
    width: float


def _app(fn, name="m", **options) -> BlazeApp:
    app = BlazeApp()
    app.model(name, **options)(fn)
    return app


def _m(a: float, b: float) -> float:
    return a + b


def _m_text(a: float, b: str) -> float:
    return a


def _m_list(a: float, b: list[float]) -> float:
    return a


def _m_stream(a: float, b: float) -> Iterator[float]:
    yield a


def _m_out(a: float, b: float) -> str:
    return ""


def _m_map(a: float, b: dict[str, float]) -> float:
    return a


def _m_map_int(a: float, b: dict[str, int]) -> float:
    return a


def _m_enum(a: float, c: Color) -> float:
    return a


def _m_enum_inserted(a: float, c: Color2) -> float:
    return a


def _m_box(a: float, box: Box) -> float:
    return a


CASES = [
    ("type", _m, _m_text, r"model 'm' version '1' \(rpc PredictM\) request: field 'b' changed type double → string"),
    ("label", _m, _m_list, r"request: field 'b' changed type double → repeated double"),
    ("map", _m_map, _m_map_int, r"request: field 'b' changed type map<string,double> → map<string,int64>"),
    ("response", _m, _m_out, r"\(rpc PredictM\) response: field 'result' changed type double → string"),
    ("shape", _m, _m_stream, r"\(rpc PredictM\): streaming shape changed from unary to server-streaming"),
]


@pytest.mark.parametrize(("kind", "old", "new", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_breaking_change_is_refused_at_start(tmp_path, kind, old, new, message):
    lock = lock_for(_app(old), tmp_path / "blaze_service.lock")
    with pytest.raises(BreakingChanges, match=message) as refused:
        start(_app(new), lock)
    assert "--allow-breaking" in str(refused.value) and str(lock) in str(refused.value)


def test_an_enum_member_inserted_between_others_is_refused(tmp_path):
    lock = lock_for(_app(_m_enum), tmp_path / "x.lock")
    lock.write_text(lock.read_text().replace("Color", "Color2").replace("COLOR_", "COLOR2_"))
    with pytest.raises(BreakingChanges, match=r"enum Color2: value COLOR2_BLUE moved from 1 to 2 \(add enum members "
                                              r"at the end"):
        start(_app(_m_enum_inserted), lock)


def test_a_nested_message_field_change_names_the_message(tmp_path):
    lock = lock_for(_app(_m_box), tmp_path / "x.lock")
    lock.write_text(lock.read_text().replace("field 1 width double", "field 1 width string"))
    with pytest.raises(BreakingChanges, match=r"message Box: field 'width' changed type string → double"):
        start(_app(_m_box), lock)


def test_a_reserved_name_taken_again_with_another_type_is_refused(tmp_path):
    def three(a: float, b: float, c: float) -> float:
        return a

    def two(a: float, b: float) -> float:
        return a

    def c_again(a: float, b: float, c: str) -> float:
        return a

    lock = lock_for(_app(three), tmp_path / "x.lock")
    lock_for(_app(two), lock, previous=lock)
    assert "  reserved 3 c double\n" in lock.read_text()
    with pytest.raises(BreakingChanges, match=r"request: new field 'c' string reuses a reserved name"):
        start(_app(c_again), lock)
    start(_app(three), lock)  # the same field back with its own type takes its number back: compatible


def test_a_removed_model_or_version_is_refused_and_an_added_one_is_not(tmp_path):
    app = BlazeApp()
    app.model("scale", version="1")(_m)
    app.model("scale", version="2")(_m)
    app.model("other")(_m)
    lock = lock_for(app, tmp_path / "x.lock")
    one_version = BlazeApp()
    one_version.model("scale", version="2")(_m)
    one_version.model("other")(_m)
    with pytest.raises(BreakingChanges) as refused:
        start(one_version, lock)
    for rpc in ("PredictScaleV1", "PredictScaleV2"):
        assert f"(rpc {rpc}): is no longer served; clients calling it get UNIMPLEMENTED" in str(refused.value)
    no_other = BlazeApp()
    no_other.model("scale", version="1")(_m)
    no_other.model("scale", version="2")(_m)
    with pytest.raises(BreakingChanges, match=r"model 'other' version '1' \(rpc PredictOther\): is no longer served"):
        start(no_other, lock)
    more = BlazeApp()
    for version in ("1", "2", "3"):
        more.model("scale", version=version)(_m)
    more.model("other")(_m)
    more.model("new")(_m)
    start(more, lock)


def test_allow_breaking_serves_and_says_loudly_what_it_allowed(tmp_path, caplog):
    lock = lock_for(_app(_m), tmp_path / "x.lock")
    with caplog.at_level(logging.WARNING, "blazerpc.schema"):
        server = start(_app(_m_text), lock, allow_breaking=True)
    assert "ALLOWED BREAKING CHANGE (--allow-breaking) against schema lock" in caplog.text
    assert "field 'b' changed type double → string" in caplog.text
    assert "string b = 2;" in render_proto(server.host.schema.file)


def test_blazerpc_serve_refuses_with_one_message_and_a_non_zero_exit(tmp_path):
    app = write_app(tmp_path / "app.py", SUB)
    lock = str(tmp_path / "blaze_service.lock")
    assert run_cli("proto", str(app), "--lock", lock, "-o", str(tmp_path)).returncode == 0
    write_app(app, SUB.replace("b: float", "b: list[float]"))
    done = run_cli("serve", str(app), "--port", "0", "--schema-lock", lock)
    assert done.returncode != 0
    assert "1 breaking schema change(s) against schema lock" in done.stderr
    assert "model 'sub' version '1' (rpc PredictSub) request: field 'b' changed type double → repeated double" in (
        done.stderr)
    assert "Traceback" not in done.stderr
