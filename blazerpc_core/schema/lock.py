"""The schema lock: the field numbers deployed clients were built with, and how a schema keeps them.

Field numbers are what travels on the wire; names do not. Without a lock, request fields
are numbered by parameter order, so inserting or reordering a parameter silently moves
every old client's values into other fields. A lock records, per message, each field's
name, number and type, the numbers and names no field may take again (``reserved``), enum
values and the rpcs with their streaming shape. :func:`apply_lock` renumbers a freshly
assembled ``FileDescriptorProto`` through a lock: a locked field keeps its number, a new
one gets the next number never used, a removed one becomes ``reserved`` (number and
name), so the exported ``.proto`` and reflection show it too.

The text format (``blazerpc proto --lock FILE`` writes it, ``docs/schema.md`` describes it)
is one line per fact, sorted, so a review diff shows exactly what changed::

    blazerpc-schema-lock 1
    package blazerpc

    rpc PredictAdd unary AddRequest AddResponse model add 1

    message AddRequest
      field 1 a double
      field 3 offset optional double
      reserved 2 b double
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from google.protobuf import descriptor_pb2

from blazerpc_core.errors import RegistrationError
from blazerpc_core.method import PACKAGE
from blazerpc_core.schema.builder import Rpcs
from blazerpc_core.schema.fields import T

__all__ = [
    "LOCK_NAME",
    "Lock",
    "LockError",
    "LockedEnum",
    "LockedField",
    "LockedMessage",
    "LockedRpc",
    "Reserved",
    "apply_lock",
    "lock_of",
    "read_lock",
    "same_kind",
    "updated_lock",
    "write_lock",
]

#: The file name ``blazerpc proto --lock`` suggests, and the one a model package ships.
LOCK_NAME = "blaze_service.lock"
MAGIC = "blazerpc-schema-lock"
FORMAT = 1
HEADER = (
    "# blazerpc schema lock: the field numbers deployed clients rely on (docs/schema.md).\n"
    "# Written by `blazerpc proto --lock`; commit it, review every change, never renumber by hand.\n"
)
#: Protobuf's largest field number, and the range it keeps for itself.
MAX_NUMBER = 536_870_911
_RESERVED_BY_PROTOBUF = range(19_000, 20_000)

_TYPE_NAMES: dict[int, str] = {
    T.TYPE_DOUBLE: "double", T.TYPE_FLOAT: "float", T.TYPE_INT64: "int64", T.TYPE_UINT64: "uint64",
    T.TYPE_INT32: "int32", T.TYPE_FIXED64: "fixed64", T.TYPE_FIXED32: "fixed32", T.TYPE_BOOL: "bool",
    T.TYPE_STRING: "string", T.TYPE_BYTES: "bytes", T.TYPE_UINT32: "uint32", T.TYPE_SFIXED32: "sfixed32",
    T.TYPE_SFIXED64: "sfixed64", T.TYPE_SINT32: "sint32", T.TYPE_SINT64: "sint64", T.TYPE_GROUP: "group",
}
_SHAPES = ("unary", "server-streaming", "client-streaming", "bidi-streaming")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_TYPE = re.compile(r"^(map<[A-Za-z0-9_.]+,[A-Za-z0-9_.]+>|[A-Za-z_][A-Za-z0-9_.]*)$")


_V = TypeVar("_V")


class LockError(RegistrationError):
    """A lock file that cannot be read, or that contradicts itself."""


# -- the data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockedField:
    """One field: its number, and its type as ``.proto`` text (``double``, ``TensorProto``, ``map<string,int64>``).

    ``label`` is ``""``, ``"optional"`` (proto3 presence: a parameter with a default) or
    ``"repeated"``; a map's label is ``""``.
    """

    name: str
    number: int
    type: str
    label: str = ""

    @property
    def kind(self) -> str:
        """Label and type, as a person reads them (``optional double``)."""
        return f"{self.label} {self.type}".strip()

    @property
    def wire_kind(self) -> str:
        """The kind without proto3 presence, which the wire does not carry (``optional double`` == ``double``)."""
        return self.type if self.label == "optional" else self.kind


@dataclass(frozen=True)
class Reserved:
    """Numbers (``first``..``last``) and/or a name no field may take again.

    ``kind`` is what the removed field was, when this lock removed it: a field that comes
    back with the same name and kind gets its old number back.
    """

    first: int | None = None
    last: int | None = None
    name: str | None = None
    kind: str | None = None

    def covers(self, number: int) -> bool:
        return self.first is not None and self.last is not None and self.first <= number <= self.last

    @property
    def top(self) -> int:
        return self.last or 0


@dataclass
class LockedMessage:
    """One message: its fields (by number) and what stays reserved."""

    name: str
    fields: list[LockedField] = field(default_factory=list)
    reserved: list[Reserved] = field(default_factory=list)

    def by_name(self) -> dict[str, LockedField]:
        return {f.name: f for f in self.fields}

    def by_number(self) -> dict[int, LockedField]:
        return {f.number: f for f in self.fields}

    def reserved_names(self) -> set[str]:
        return {r.name for r in self.reserved if r.name}

    def reserved_number(self, number: int) -> Reserved | None:
        return next((r for r in self.reserved if r.covers(number)), None)

    def top(self) -> int:
        """The highest number this message ever used: new fields are numbered after it."""
        return max([0, *(f.number for f in self.fields), *(r.top for r in self.reserved)])


@dataclass
class LockedEnum:
    """One enum: value name → number."""

    name: str
    values: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LockedRpc:
    """One rpc: its streaming shape, its messages, and the model version serving it (when known)."""

    name: str
    shape: str
    request: str
    response: str
    model: str | None = None
    version: str | None = None


@dataclass
class Lock:
    """Everything a schema promised its clients (see the module docstring)."""

    messages: dict[str, LockedMessage] = field(default_factory=dict)
    enums: dict[str, LockedEnum] = field(default_factory=dict)
    rpcs: dict[str, LockedRpc] = field(default_factory=dict)
    package: str = PACKAGE
    #: Where it was read from (a path, or a description), for messages.
    source: str = ""

    def render(self) -> str:
        """The lock as text: sorted, one fact per line, so that diffs are small."""
        lines = [HEADER + f"{MAGIC} {FORMAT}", f"package {self.package}", ""]
        for rpc in sorted(self.rpcs.values(), key=lambda r: r.name):
            model = f" model {rpc.model} {rpc.version}" if rpc.model and rpc.version else ""
            lines.append(f"rpc {rpc.name} {rpc.shape} {rpc.request} {rpc.response}{model}")
        for message in sorted(self.messages.values(), key=lambda m: m.name):
            lines += ["", f"message {message.name}"]
            for f in sorted(message.fields, key=lambda f: f.number):
                lines.append(f"  field {f.number} {f.name} {f.kind}")
            for r in sorted(message.reserved, key=lambda r: (r.first is None, r.first or 0, r.name or "")):
                lines.append(f"  reserved {_reserved_text(r)}")
        for enum in sorted(self.enums.values(), key=lambda e: e.name):
            lines += ["", f"enum {enum.name}"]
            lines += [f"  value {number} {name}" for name, number in sorted(enum.values.items(), key=lambda v: v[1])]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str, source: str = "schema lock") -> Lock:
        """Read a lock's text; an error names the line."""
        return _Parser(source).parse(text)

    def merged(self, other: Lock) -> Lock:
        """Both locks at once (model packages ship one each); a message or rpc they disagree on is an error."""
        where = f"schema locks {self.source} and {other.source}"
        return Lock(
            _union(self.messages, other.messages, f"{where} disagree on message"),
            _union(self.enums, other.enums, f"{where} disagree on enum"),
            _union(self.rpcs, other.rpcs, f"{where} disagree on rpc"),
            self.package,
            f"{self.source} + {other.source}",
        )


def _union(mine: dict[str, _V], theirs: dict[str, _V], conflict: str) -> dict[str, _V]:
    out = dict(mine)
    for name, value in theirs.items():
        if name in out and out[name] != value:
            raise LockError(f"{conflict} {name}")
        out[name] = value
    return out


def _reserved_text(r: Reserved) -> str:
    if r.first is None:
        return r.name or ""
    numbers = str(r.first) if r.first == r.last else f"{r.first}-{'max' if r.last == MAX_NUMBER else r.last}"
    return " ".join(p for p in (numbers, r.name, r.kind) if p)


def read_lock(path: str | Path) -> Lock:
    """The lock in ``path``; LockError (a RegistrationError) says what is wrong with it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LockError(
            f"schema lock {path} does not exist; write it with `blazerpc proto TARGET --lock {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LockError(f"cannot read schema lock {path}: {exc}") from None
    return Lock.parse(text, str(path))


def write_lock(lock: Lock, path: str | Path) -> None:
    """Write ``lock`` to ``path`` (through a temporary file, so a reader never sees half of it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(lock.render(), encoding="utf-8")
    partial.replace(path)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.line = 0

    def fail(self, why: str) -> LockError:
        return LockError(f"schema lock {self.source}, line {self.line}: {why}")

    def number(self, text: str) -> int:
        if text == "max":
            return MAX_NUMBER
        if not text.isdigit() or not 0 <= int(text) <= MAX_NUMBER:
            raise self.fail(f"{text!r} is not a field number")
        return int(text)

    def name(self, text: str) -> str:
        if not _NAME.match(text):
            raise self.fail(f"{text!r} is not a protobuf name")
        return text

    def parse(self, text: str) -> Lock:
        lock = Lock(source=self.source)
        current: LockedMessage | LockedEnum | None = None
        seen_magic = False
        for self.line, raw in enumerate(text.splitlines(), start=1):
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            keyword, args = words[0], words[1:]
            if not seen_magic:
                if keyword != MAGIC or args != [str(FORMAT)]:
                    raise self.fail(f"not a schema lock (it should start with '{MAGIC} {FORMAT}')")
                seen_magic = True
            elif keyword == "package" and len(args) == 1:
                lock.package = self.name(args[0])
            elif keyword == "rpc":
                self.rpc(lock, args)
                current = None
            elif keyword in ("message", "enum") and len(args) == 1:
                name = self.name(args[0])
                if name in lock.messages or name in lock.enums:
                    raise self.fail(f"{name} appears twice")
                if keyword == "message":
                    current = lock.messages[name] = LockedMessage(name)
                else:
                    current = lock.enums[name] = LockedEnum(name)
            elif keyword == "field" and isinstance(current, LockedMessage):
                self.field(current, args)
            elif keyword == "reserved" and isinstance(current, LockedMessage):
                self.reserved(current, args)
            elif keyword == "value" and isinstance(current, LockedEnum) and len(args) == 2:
                value = self.name(args[1])
                if value in current.values:
                    raise self.fail(f"enum value {value} appears twice")
                if not re.fullmatch(r"-?\d+", args[0]):
                    raise self.fail(f"{args[0]!r} is not an enum value number")
                current.values[value] = int(args[0])
            else:
                raise self.fail(f"cannot read {raw.strip()!r}")
        if not seen_magic:
            raise LockError(f"schema lock {self.source} is empty")
        return lock

    def rpc(self, lock: Lock, args: list[str]) -> None:
        if len(args) not in (4, 7) or (len(args) == 7 and args[4] != "model"):
            raise self.fail("an rpc line is: rpc NAME SHAPE REQUEST RESPONSE [model NAME VERSION]")
        name, shape, request, response = args[:4]
        if shape not in _SHAPES:
            raise self.fail(f"{shape!r} is not a streaming shape ({', '.join(_SHAPES)})")
        if name in lock.rpcs:
            raise self.fail(f"rpc {name} appears twice")
        model, version = (args[5], args[6]) if len(args) == 7 else (None, None)
        lock.rpcs[name] = LockedRpc(self.name(name), shape, self.name(request), self.name(response), model, version)

    def field(self, message: LockedMessage, args: list[str]) -> None:
        if len(args) not in (3, 4) or (len(args) == 4 and args[2] not in ("optional", "repeated")):
            raise self.fail("a field line is: field NUMBER NAME [optional|repeated] TYPE")
        number, name = self.number(args[0]), self.name(args[1])
        label, kind = (args[2], args[3]) if len(args) == 4 else ("", args[2])
        if not _TYPE.match(kind):
            raise self.fail(f"{kind!r} is not a field type")
        if number == 0:
            raise self.fail("field numbers start at 1")
        if number in message.by_number() or name in message.by_name():
            raise self.fail(f"field {number} {name}: its number or name is used twice in {message.name}")
        if message.reserved_number(number) is not None or name in message.reserved_names():
            raise self.fail(f"field {number} {name} of {message.name} is also reserved")
        message.fields.append(LockedField(name, number, kind, label))

    def reserved(self, message: LockedMessage, args: list[str]) -> None:
        if not args:
            raise self.fail("a reserved line is: reserved NUMBER[-LAST] [NAME [TYPE]] or reserved NAME")
        first = last = None
        if args[0][0].isdigit():
            low, _, high = args[0].partition("-")
            first = self.number(low)
            last = self.number(high) if high else first
            if last < first:
                raise self.fail(f"reserved range {args[0]} is empty")
            args = args[1:]
        name = self.name(args[0]) if args else None
        kind = " ".join(args[1:]) or None
        entry = Reserved(first, last, name, kind)
        if any(entry.covers(f.number) or f.name == name for f in message.fields):
            raise self.fail(f"reserved {_reserved_text(entry)} of {message.name} is also a field")
        if first is not None and last is not None and any(
            r.first is not None and r.last is not None and r.first <= last and first <= r.last
            for r in message.reserved
        ):
            raise self.fail(f"reserved numbers {_reserved_text(entry)} of {message.name} overlap another reserved line")
        message.reserved.append(entry)


# -- reading a descriptor ----------------------------------------------------------------------

def _messages(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    """Every message of ``file`` by its name within the package (``Outer.Inner``), map entries left out."""
    todo = [(m.name, m) for m in file.message_type]
    while todo:
        name, message = todo.pop(0)
        yield name, message
        todo += [(f"{name}.{n.name}", n) for n in message.nested_type if not n.options.map_entry]


def _enums(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, descriptor_pb2.EnumDescriptorProto]]:
    yield from ((e.name, e) for e in file.enum_type)
    for name, message in _messages(file):
        yield from ((f"{name}.{e.name}", e) for e in message.enum_type)


class _Types:
    """Field types of one file as ``.proto`` text."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self.package = file.package
        self.entries: dict[str, descriptor_pb2.DescriptorProto] = {}
        for name, message in _messages(file):
            for nested in message.nested_type:
                if nested.options.map_entry:
                    self.entries[f".{file.package}.{name}.{nested.name}"] = nested

    def short(self, type_name: str) -> str:
        prefix = f".{self.package}."
        return type_name[len(prefix):] if type_name.startswith(prefix) else type_name.lstrip(".")

    def scalar_or_named(self, f: descriptor_pb2.FieldDescriptorProto) -> str:
        if f.type in (T.TYPE_MESSAGE, T.TYPE_ENUM):
            return self.short(f.type_name)
        return _TYPE_NAMES.get(f.type, str(f.type))

    def locked(self, f: descriptor_pb2.FieldDescriptorProto) -> LockedField:
        entry = self.entries.get(f.type_name) if f.type == T.TYPE_MESSAGE else None
        if entry is not None and f.label == T.LABEL_REPEATED:
            key, value = sorted(entry.field, key=lambda e: e.number)[:2]
            return LockedField(f.name, f.number, f"map<{self.scalar_or_named(key)},{self.scalar_or_named(value)}>")
        if f.label == T.LABEL_REPEATED:
            label = "repeated"
        elif f.proto3_optional:
            label = "optional"
        else:
            label = ""
        return LockedField(f.name, f.number, self.scalar_or_named(f), label)


def _models(rpcs: Rpcs) -> dict[str, tuple[str, str]]:
    return {rpc: (spec.name, spec.version) for rpc, _, spec in rpcs or ()}


def _shape(method: descriptor_pb2.MethodDescriptorProto) -> str:
    return _SHAPES[bool(method.server_streaming) + 2 * bool(method.client_streaming)]


def lock_of(file: descriptor_pb2.FileDescriptorProto, rpcs: Rpcs = ()) -> Lock:
    """What ``file`` promises, as it stands (its own reserved numbers and names included).

    ``rpcs`` (``ModelRegistry.rpcs()``) adds the model version serving each rpc.
    """
    types = _Types(file)
    lock = Lock(package=file.package or PACKAGE, source=file.name)
    for name, message in _messages(file):
        reserved = [Reserved(r.start, r.end - 1) for r in message.reserved_range]
        reserved += [Reserved(name=n) for n in message.reserved_name]
        lock.messages[name] = LockedMessage(name, [types.locked(f) for f in message.field], reserved)
    for name, enum in _enums(file):
        lock.enums[name] = LockedEnum(name, {v.name: v.number for v in enum.value})
    models = _models(rpcs)
    for service in file.service:
        for method in service.method:
            model, version = models.get(method.name, (None, None))
            lock.rpcs[method.name] = LockedRpc(
                method.name, _shape(method), types.short(method.input_type), types.short(method.output_type),
                model, version,
            )
    return lock


# -- renumbering a descriptor through a lock -----------------------------------------------------


def apply_lock(file: descriptor_pb2.FileDescriptorProto, lock: Lock, rpcs: Rpcs = ()) -> Lock:
    """Renumber ``file`` in place so it keeps ``lock``'s promises; return what it promises now.

    In each message the lock knows: a locked field keeps its number; a field that was
    removed and comes back with the same name and kind gets its old number back; any
    other new field gets the next number above every number the message ever used
    (never a reserved one); a locked field that is gone is reserved, number and name.
    Nothing is judged here: :func:`blazerpc_core.schema.compat.compare` says which of
    these changes break clients. Enums are not renumbered (their converters number
    members by declaration order); the comparison refuses a moved value instead.
    """
    types = _Types(file)
    promised = lock_of(file, rpcs)
    for name, message in _messages(file):
        old = lock.messages.get(name)
        if old is not None:
            promised.messages[name] = _renumber(message, old, types)
    return promised


def _renumber(message: descriptor_pb2.DescriptorProto, old: LockedMessage, types: _Types) -> LockedMessage:
    locked = old.by_name()
    present = {f.name for f in message.field}
    restorable = {r.name: r for r in old.reserved if r.name and r.kind and r.first is not None and r.first == r.last}
    reserved = list(old.reserved)
    top = old.top()
    taken: set[int] = set()
    for f in message.field:
        kind = types.locked(f).wire_kind
        back = restorable.get(f.name)
        if f.name in locked:
            f.number = locked[f.name].number
        elif back is not None and back.first is not None and same_kind(back.kind, kind):
            f.number = back.first
            reserved.remove(back)
        else:
            top = _next_number(top)
            f.number = top
        taken.add(f.number)
    # A reserved name now taken by a field cannot stay reserved (protoc would refuse the
    # file); the comparison reports the reuse, and the number stays reserved.
    reserved = [replace(r, name=None, kind=None) if r.name in present else r for r in reserved]
    reserved = [r for r in reserved if r.first is not None or r.name]
    for gone in old.fields:
        if gone.name not in present:
            reserved.append(Reserved(gone.number, gone.number, gone.name, gone.kind))
    del message.reserved_range[:]
    del message.reserved_name[:]
    for r in sorted(reserved, key=lambda r: (r.first is None, r.first or 0)):
        if r.first is not None and r.last is not None:
            message.reserved_range.add(start=r.first, end=r.last + 1)
        if r.name:
            message.reserved_name.append(r.name)
    fields = [types.locked(f) for f in message.field]
    return LockedMessage(old.name, fields, reserved)


def same_kind(before: str | None, now: str) -> bool:
    """Whether a removed field's kind (``before``) is ``now``'s wire kind: presence aside, the same."""
    return before is not None and before.removeprefix("optional ") == now


def _next_number(top: int) -> int:
    number = top + 1
    if number in _RESERVED_BY_PROTOBUF:
        number = _RESERVED_BY_PROTOBUF.stop
    if number > MAX_NUMBER:
        raise LockError(f"no field number is left above {top}")
    return number


def updated_lock(old: Lock, now: Lock) -> Lock:
    """The lock to keep after serving ``now`` (from :func:`apply_lock` over ``old``).

    Messages and enums no longer served stay, so a model that comes back gets its old
    numbers; rpcs are the ones served now (a removed rpc was refused, or allowed).
    """
    messages = {**old.messages, **now.messages}
    enums = {**old.enums, **now.enums}
    return Lock(messages, enums, dict(now.rpcs), now.package, old.source or now.source)

