"""The lock file and renumbering through it, without a server: the format, its errors, and each numbering rule."""

from __future__ import annotations

import dataclasses
import enum

import pytest

from blazerpc_core import BlazeApp
from blazerpc_core.build import assemble
from blazerpc_core.schema.compat import BreakingChanges, Numbering
from blazerpc_core.schema.lock import Lock, LockError, apply_lock, lock_of, read_lock, updated_lock, write_lock
from blazerpc_core.schema.proto_text import render_proto


@dataclasses.dataclass
class Point:
    x: float
    y: float


@dataclasses.dataclass
class PointZ:
    x: float
    z: float
    y: float


class Color(enum.Enum):
    RED = 1
    GREEN = 2


def _schema(*models, number=None):
    """The schema of ``models`` (functions decorated by ``app.model``) as ``blazerpc proto`` would assemble it."""
    app = BlazeApp()
    for name, fn in models:
        app.model(name)(fn)
    assembly = assemble(app, load_entry_points=False)
    return assembly.schema(number or (lambda file, rpcs: None)), assembly.registry.rpcs()


def _locked(fn, name="m"):
    schema, rpcs = _schema((name, fn))
    return Lock.parse(lock_of(schema.file, rpcs).render(), "test.lock")


def _numbers(file, message):
    found = next(m for m in file.message_type if m.name == message)
    return {f.name: f.number for f in found.field}, list(found.reserved_name), [
        (r.start, r.end - 1) for r in found.reserved_range
    ]


def test_the_text_format_round_trips_and_is_sorted_one_fact_a_line(tmp_path):
    def m(a: float, tags: list[str], weights: dict[str, int], p: Point, c: Color, b: float = 1.0) -> float:
        return a

    lock = _locked(m)
    text = lock.render()
    assert "blazerpc-schema-lock 1" in text
    assert "rpc PredictM unary MRequest MResponse model m 1" in text
    for line in ("field 1 a double", "field 2 tags repeated string", "field 3 weights map<string,int64>",
                 "field 4 p Point", "field 5 c Color", "field 6 b optional double", "value 1 COLOR_GREEN"):
        assert f"  {line}\n" in text
    write_lock(lock, tmp_path / "x.lock")
    again = read_lock(tmp_path / "x.lock")
    assert again.render() == text
    assert again.messages["MRequest"].by_name()["weights"].type == "map<string,int64>"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "is empty"),
        ("message A\n", "line 1: not a schema lock"),
        ("blazerpc-schema-lock 1\nfield 1 a double\n", "line 2: cannot read"),
        ("blazerpc-schema-lock 1\nmessage A\n  field x a double\n", "line 3: 'x' is not a field number"),
        ("blazerpc-schema-lock 1\nmessage A\n  field 1 a double\n  field 1 b double\n", "line 4: field 1 b"),
        ("blazerpc-schema-lock 1\nmessage A\n  reserved 2 b\n  field 2 c double\n", "line 4: field 2 c of A is also"),
        ("blazerpc-schema-lock 1\nmessage A\n  field 1 a double\n  reserved a\n", "line 4: reserved a of A is also"),
        ("blazerpc-schema-lock 1\nmessage A\n  reserved 2-5\n  reserved 4\n", "line 4: reserved numbers 4"),
        ("blazerpc-schema-lock 1\nrpc P sideways A B\n", "line 2: 'sideways' is not a streaming shape"),
        ("blazerpc-schema-lock 2\n", "line 1: not a schema lock"),
    ],
)
def test_a_bad_lock_is_refused_naming_the_line(text, error):
    with pytest.raises(LockError, match=error):
        Lock.parse(text, "bad.lock")


def test_a_missing_lock_says_how_to_write_one(tmp_path):
    with pytest.raises(LockError, match=r"does not exist; write it with `blazerpc proto TARGET --lock"):
        read_lock(tmp_path / "nope.lock")


def test_locked_numbers_are_kept_new_fields_appended_and_removed_ones_reserved():
    def before(a: float, b: float, c: float) -> float:
        return a

    def after(b: float, a: float, new: str, d: float) -> float:
        return a

    lock = _locked(before)
    schema, rpcs = _schema(("m", after))
    now = apply_lock(schema.file, lock, rpcs)
    numbers, names, ranges = _numbers(schema.file, "MRequest")
    assert numbers == {"b": 2, "a": 1, "new": 4, "d": 5}
    assert (names, ranges) == (["c"], [(3, 3)])
    assert "  reserved 3 c double\n" in updated_lock(lock, now).render()
    assert "reserved 3;" in render_proto(schema.file) and 'reserved "c";' in render_proto(schema.file)


def test_a_field_that_comes_back_with_its_type_gets_its_number_back_and_one_with_another_type_does_not():
    def first(a: float, b: float, c: float) -> float:
        return a

    def without_c(a: float, b: float) -> float:
        return a

    lock = _locked(first)
    schema, rpcs = _schema(("m", without_c))
    lock = updated_lock(lock, apply_lock(schema.file, lock, rpcs))
    schema, rpcs = _schema(("m", first))
    apply_lock(schema.file, lock, rpcs)
    assert _numbers(schema.file, "MRequest") == ({"a": 1, "b": 2, "c": 3}, [], [])

    def c_as_text(a: float, b: float, c: str) -> float:
        return a

    schema, rpcs = _schema(("m", c_as_text))
    apply_lock(schema.file, lock, rpcs)
    # A new number, never the reserved one; the name cannot stay reserved while a field has it.
    assert _numbers(schema.file, "MRequest") == ({"a": 1, "b": 2, "c": 4}, [], [(3, 3)])


def test_nested_messages_keep_their_numbers_and_map_entries_are_left_alone():
    def before(p: Point, w: dict[str, float]) -> float:
        return 0.0

    def after(p: PointZ, w: dict[str, float]) -> float:
        return 0.0

    lock = _locked(before)
    lock.messages["PointZ"] = dataclasses.replace(lock.messages.pop("Point"), name="PointZ")
    schema, rpcs = _schema(("m", after))
    apply_lock(schema.file, lock, rpcs)
    assert _numbers(schema.file, "PointZ")[0] == {"x": 1, "z": 3, "y": 2}
    request = next(m for m in schema.file.message_type if m.name == "MRequest")
    assert [(f.name, f.number) for f in request.nested_type[0].field] == [("key", 1), ("value", 2)]


def test_new_numbers_skip_the_range_protobuf_keeps_for_itself():
    def m(a: float, b: float) -> float:
        return a

    lock = Lock.parse("blazerpc-schema-lock 1\nmessage MRequest\n  field 1 a double\n  reserved 2-18999\n", "x")
    schema, rpcs = _schema(("m", m))
    apply_lock(schema.file, lock, rpcs)
    assert _numbers(schema.file, "MRequest")[0] == {"a": 1, "b": 20000}
    assert "reserved 2 to 18999;" in render_proto(schema.file)


def test_messages_no_longer_served_stay_in_the_lock_so_a_model_that_returns_keeps_its_numbers():
    def m(a: float, b: float) -> float:
        return a

    def other(x: float) -> float:
        return x

    lock = _locked(m)
    schema, rpcs = _schema(("other", other))
    kept = updated_lock(lock, apply_lock(schema.file, lock, rpcs))
    assert "MRequest" in kept.messages and "OtherRequest" in kept.messages
    assert set(kept.rpcs) == {"PredictOther"}


def test_package_locks_merge_and_a_disagreement_is_an_error():
    a = Lock.parse("blazerpc-schema-lock 1\nmessage A\n  field 1 x double\n", "a.lock")
    b = Lock.parse("blazerpc-schema-lock 1\nmessage B\n  field 1 x double\n", "b.lock")
    assert set(a.merged(b).messages) == {"A", "B"}
    clash = Lock.parse("blazerpc-schema-lock 1\nmessage A\n  field 2 x double\n", "c.lock")
    with pytest.raises(LockError, match=r"schema locks a\.lock and c\.lock disagree on message A"):
        a.merged(clash)


def test_a_numbering_refuses_breaking_changes_unless_allowed_and_then_says_so(caplog):
    def before(a: float) -> float:
        return a

    def after(a: str) -> float:
        return 0.0

    lock = _locked(before)
    with pytest.raises(BreakingChanges, match=r"model 'm' version '1' \(rpc PredictM\) request: field 'a' changed "
                                              r"type double → string"):
        _schema(("m", after), number=Numbering(lock).apply)
    schema, _ = _schema(("m", after), number=Numbering(lock, allow_breaking=True).apply)
    assert _numbers(schema.file, "MRequest")[0] == {"a": 1}
    assert "ALLOWED BREAKING CHANGE (--allow-breaking)" in caplog.text
