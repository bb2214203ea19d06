"""What breaks deployed clients, and the numbering a server keeps from its start to its stop.

:func:`compare` lists the changes between what a schema promised (a lock, or a ``.proto``
read back into one) and what it serves now, each marked breaking or compatible:

- breaking: a field whose number moved, whose type or label changed (``double`` →
  ``string``, a scalar → ``repeated``, a map); a number or name that was reserved, taken
  by a field again; a number that meant another field; a removed rpc; a changed
  streaming shape or message of an rpc; an enum value removed or renumbered.
- compatible: a new field, message, enum, enum value (appended) or rpc (a new model or
  version); a removed field (its number stays reserved); a field gaining or losing
  proto3 presence (a parameter default), which the wire does not carry.

:class:`Numbering` is what a running server applies to every schema it assembles: the
lock it was started with, plus every number it has given since, so a reload never
renumbers a field, lock file or not.
"""

from __future__ import annotations

import importlib.resources
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

from blazerpc_core.errors import FailedPrecondition, RegistrationError
from blazerpc_core.method import FILE_NAME
from blazerpc_core.naming import model_label
from blazerpc_core.schema.builder import Rpcs
from blazerpc_core.schema.lock import (
    LOCK_NAME,
    Lock,
    LockedMessage,
    LockError,
    apply_lock,
    lock_of,
    read_lock,
    same_kind,
    updated_lock,
)

log = logging.getLogger("blazerpc.schema")

__all__ = ["BreakingChanges", "Change", "Numbering", "compare", "exported_differences", "read_reference"]


@dataclass(frozen=True)
class Change:
    """One difference between what clients were promised and what is served."""

    breaking: bool
    #: Who it concerns: the model, its rpc, the message.
    subject: str
    text: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.text}"


class BreakingChanges(RegistrationError, FailedPrecondition):
    """Refused: changes that would break deployed clients (``--allow-breaking`` accepts them).

    At start it is a registration error; a reload or load refused while serving answers
    FAILED_PRECONDITION (the old models keep serving).
    """

    def __init__(self, against: str, changes: list[Change]) -> None:
        self.changes = changes
        listed = "\n".join(f"  - {c}" for c in changes)
        self.message = (
            f"{len(changes)} breaking schema change(s) against {against}; clients built from it would break:\n"
            f"{listed}\nRevert them, or pass --allow-breaking once every client is rebuilt (docs/schema.md)."
        )
        RegistrationError.__init__(self, self.message)


# -- the comparison -----------------------------------------------------------------------------


class _Subjects:
    """How changes name what they concern: the model version and rpc, or the message."""

    def __init__(self, old: Lock, new: Lock) -> None:
        self.roles: dict[str, str] = {}
        self.rpcs: dict[str, str] = {}
        for lock in (new, old):  # the schema served knows its models; an old .proto does not
            for rpc in lock.rpcs.values():
                name = f"rpc {rpc.name}"
                if rpc.model and rpc.version:
                    name = f"model {model_label(rpc.model, rpc.version)} ({name})"
                name = self.rpcs.setdefault(rpc.name, name)
                self.roles.setdefault(rpc.request, f"{name} request")
                self.roles.setdefault(rpc.response, f"{name} response")

    def message(self, name: str) -> str:
        return self.roles.get(name, f"message {name}")

    def rpc(self, name: str) -> str:
        return self.rpcs.get(name, f"rpc {name}")


def compare(old: Lock, new: Lock, *, removed_rpcs: bool = True) -> list[Change]:
    """Every change from ``old`` to ``new`` (see the module docstring); breaking ones first.

    ``removed_rpcs`` False leaves out rpcs that are gone (a running server unloading a
    model means it).
    """
    names = _Subjects(old, new)
    changes: list[Change] = []
    for name, before in old.messages.items():
        after = new.messages.get(name)
        if after is not None:
            changes += _message(names.message(name), before, after)
    for name in new.messages.keys() - old.messages.keys():
        changes.append(Change(False, names.message(name), "new message"))
    for name, enum in old.enums.items():
        now = new.enums.get(name)
        if now is None:
            continue
        for value, number in enum.values.items():
            if value not in now.values:
                changes.append(Change(True, f"enum {name}", f"value {value} ({number}) was removed; clients that "
                                      "send it are refused"))
            elif now.values[value] != number:
                changes.append(Change(True, f"enum {name}", f"value {value} moved from {number} to "
                                      f"{now.values[value]} (add enum members at the end, never in between)"))
        for value in now.values.keys() - enum.values.keys():
            changes.append(Change(False, f"enum {name}", f"new value {value} ({now.values[value]})"))
    for name, rpc in old.rpcs.items():
        served = new.rpcs.get(name)
        if served is None:
            if removed_rpcs:
                changes.append(Change(True, names.rpc(name), "is no longer served; clients calling it get "
                                      "UNIMPLEMENTED"))
            continue
        if served.shape != rpc.shape:
            changes.append(Change(True, names.rpc(name), f"streaming shape changed from {rpc.shape} to "
                                  f"{served.shape}"))
        if (served.request, served.response) != (rpc.request, rpc.response):
            changes.append(Change(True, names.rpc(name), f"messages changed from {rpc.request} → {rpc.response} "
                                  f"to {served.request} → {served.response}"))
    for name in new.rpcs.keys() - old.rpcs.keys():
        changes.append(Change(False, names.rpc(name), "new rpc"))
    return sorted(changes, key=lambda c: not c.breaking)


def _message(subject: str, old: LockedMessage, new: LockedMessage) -> list[Change]:
    changes = []
    before, numbers = old.by_name(), old.by_number()
    reserved_names = old.reserved_names()
    for f in new.fields:
        was = before.get(f.name)
        if was is not None:
            if was.number != f.number:
                changes.append(Change(True, subject, f"field {f.name!r} moved from number {was.number} to "
                                      f"{f.number}; old clients' values for it land elsewhere"))
            if was.wire_kind != f.wire_kind:
                changes.append(Change(True, subject, f"field {f.name!r} changed type {was.kind} → {f.kind}"))
            elif was.kind != f.kind:
                changes.append(Change(False, subject, f"field {f.name!r} changed presence {was.kind} → {f.kind}"))
            continue
        other = numbers.get(f.number)
        reserved = old.reserved_number(f.number)
        if reserved is not None and reserved.name == f.name and same_kind(reserved.kind, f.wire_kind):
            changes.append(Change(False, subject, f"field {f.name!r} {f.kind} is back with its number {f.number}"))
        elif reserved is not None:
            was_text = f" (was {reserved.name}{f' {reserved.kind}' if reserved.kind else ''})" if reserved.name else ""
            changes.append(Change(True, subject, f"new field {f.name!r} {f.kind} takes reserved number "
                                  f"{f.number}{was_text}"))
        elif other is not None and other.name not in new.by_name():
            changes.append(Change(True, subject, f"number {f.number} was field {other.name!r} {other.kind}, now "
                                  f"field {f.name!r} {f.kind}; old clients' values land in the new field"))
        elif other is not None:
            changes.append(Change(True, subject, f"new field {f.name!r} {f.kind} takes number {f.number}, which "
                                  f"field {other.name!r} had"))
        elif f.name in reserved_names:
            changes.append(Change(True, subject, f"new field {f.name!r} {f.kind} reuses a reserved name"))
        else:
            changes.append(Change(False, subject, f"new field {f.name!r} {f.kind} = {f.number}"))
    now = new.by_name()
    for f in old.fields:
        if f.name not in now:
            changes.append(Change(False, subject, f"field {f.name!r} {f.kind} = {f.number} removed; old clients' "
                                  "values for it are ignored"))
    return changes


# -- a running server's numbering ----------------------------------------------------------------


class Numbering:
    """The field numbers a server promised: its lock's, then every number it has given since.

    Hand :meth:`apply` to ``assemble_schema`` for every schema the server may serve, and
    call :meth:`remember` with each one it does serve. A breaking change raises
    :class:`BreakingChanges` (nothing is served) unless ``allow_breaking``, which logs it
    loudly instead. Without a lock file the promise starts at the first schema served.
    """

    #: Schemas assembled but not served yet, kept for :meth:`remember` (a few changes may overlap).
    PENDING = 16

    def __init__(self, lock: Lock | None = None, *, allow_breaking: bool = False) -> None:
        self.lock = lock
        self.promised = lock or Lock()
        self.allow_breaking = allow_breaking
        #: Whether an rpc gone from the schema counts (at start; later, an unload means it).
        self.removed_rpcs_break = lock is not None
        self._said: set[str] = set()
        self._pending: dict[int, tuple[descriptor_pb2.FileDescriptorProto, Lock]] = {}

    @property
    def against(self) -> str:
        if self.lock is not None:
            return f"schema lock {self.lock.source}"
        return "the field numbers this server has given since it started"

    def renumber(self, file: descriptor_pb2.FileDescriptorProto, rpcs: Rpcs) -> Lock:
        """Renumber ``file`` through the promise (judging nothing); returns what it promises then."""
        now = apply_lock(file, self.promised, rpcs)
        if len(self._pending) >= self.PENDING:
            self._pending.pop(next(iter(self._pending)))
        self._pending[id(file)] = (file, now)
        return now

    def apply(self, file: descriptor_pb2.FileDescriptorProto, rpcs: Rpcs) -> None:
        """Renumber ``file``; refuse a breaking change, or log it once when allowed."""
        now = self.renumber(file, rpcs)
        breaking = [c for c in compare(self.promised, now, removed_rpcs=self.removed_rpcs_break) if c.breaking]
        if breaking and not self.allow_breaking:
            raise BreakingChanges(self.against, breaking)
        for change in breaking:
            if str(change) not in self._said:
                self._said.add(str(change))
                log.warning("ALLOWED BREAKING CHANGE (--allow-breaking) against %s: %s", self.against, change)

    def remember(self, file: descriptor_pb2.FileDescriptorProto, rpcs: Rpcs) -> None:
        """``file`` is served now: its numbers are promised from here on, and rpcs gone were meant to go."""
        pending = self._pending.pop(id(file), None)
        now = pending[1] if pending is not None and pending[0] is file else lock_of(file, rpcs)
        self.promised = updated_lock(self.promised, now)
        self.removed_rpcs_break = False


# -- reading what clients were built from --------------------------------------------------------


def read_reference(path: str | Path) -> Lock:
    """A lock file, or a ``.proto`` (by its suffix) read back through grpcio-tools' protoc."""
    path = Path(path)
    if path.suffix != ".proto":
        return read_lock(path)
    return lock_of(_parse_proto(path))


def _parse_proto(path: Path) -> descriptor_pb2.FileDescriptorProto:
    try:
        from grpc_tools import protoc  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise LockError(
            f"reading {path} needs grpcio-tools (pip install grpcio-tools), or compare against a schema lock "
            "instead (blazerpc proto --lock)"
        ) from None
    if not path.is_file():
        raise LockError(f"{path} does not exist")
    includes = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory(prefix="blazerpc-proto-") as directory:
        out = Path(directory) / "set.pb"
        code = protoc.main(["protoc", f"-I{path.parent.resolve()}", f"-I{includes}",
                            f"--descriptor_set_out={out}", path.name])
        if code != 0 or not out.exists():
            raise LockError(f"protoc could not read {path} (its errors are above)")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return next(f for f in files if f.name == path.name)


def exported_differences(
    directories: Iterable[Path], file: descriptor_pb2.FileDescriptorProto, rpcs: Rpcs, text: str
) -> list[str]:
    """Warnings for a server started without a lock, next to a lock or an exported ``.proto``.

    ``file`` and ``text`` are the schema served and its ``.proto`` text. A lock found is
    named (it is not being used); a ``.proto`` that differs from ``text`` is compared when
    grpcio-tools is installed. Never raises: a file that cannot be read is a warning too.
    """
    warnings = []
    for directory in dict.fromkeys(directories):
        lock_path, proto_path = directory / LOCK_NAME, directory / FILE_NAME
        try:
            if lock_path.is_file():
                changes = compare(read_lock(lock_path), lock_of(file, rpcs))
                what = f"a schema lock, {lock_path}, sits next to the models but this server does not use it"
            elif proto_path.is_file() and proto_path.read_text(encoding="utf-8") != text:
                what = f"the served schema differs from {proto_path}, which clients may have been built from"
                try:
                    changes = compare(read_reference(proto_path), lock_of(file, rpcs))
                except LockError as exc:
                    changes = [Change(False, str(proto_path), f"not compared: {exc}")]
            else:
                continue
        except (LockError, OSError, UnicodeDecodeError) as exc:
            warnings.append(f"could not compare the served schema with {directory}: {exc}")
            continue
        listed = "".join(f"\n  - {'BREAKING ' if c.breaking else ''}{c}" for c in changes)
        warnings.append(
            f"{what}{listed}\nKeep field numbers stable: serve with --schema-lock {lock_path} "
            f"(write it first with `blazerpc proto TARGET --lock {lock_path}`; docs/schema.md)."
        )
    return warnings
