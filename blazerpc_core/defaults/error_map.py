"""Exceptions a model raises → gRPC status codes: built-in defaults, the app's and the operator's.

An exception whose type (or a base class) is mapped reaches the client with that
status and ``"<Type>: <message>"``, even with ``--hide-error-details``: mapping a type
says its messages are meant for clients. Anything unmapped is INTERNAL. The most
specific mapped class wins; for the same class, the app beats the operator's
``--error-map``, which beats the built-in defaults.

Three ways in:

* ``BlazeApp(error_map={ValueError: "INVALID_ARGUMENT"})`` (or any plugin made with
  :class:`ErrorMap`);
* ``--error-map mypkg.errors:QuotaError=RESOURCE_EXHAUSTED`` (repeatable; builtins need
  no module: ``KeyError=NOT_FOUND``), or ``BLAZERPC_ERROR_MAP`` (space-separated);
* the defaults of this plugin (``error-map``): ``NotImplementedError`` → UNIMPLEMENTED and
  ``TimeoutError`` → DEADLINE_EXCEEDED. ``--disable-plugin error-map`` drops them.
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import click
from grpclib.const import Status

from blazerpc_core.errors import RegistrationError
from blazerpc_core.markers import hookimpl

if TYPE_CHECKING:
    from blazerpc_core.context import ServerContext

OPTION = "error_map"
DEFAULTS: Mapping[type[BaseException], Status] = {
    NotImplementedError: Status.UNIMPLEMENTED,
    TimeoutError: Status.DEADLINE_EXCEEDED,
}

StatusLike = Status | str


def to_status(value: StatusLike) -> Status:
    """A Status from itself or its name (``"INVALID_ARGUMENT"``); a bad name fails loudly."""
    if isinstance(value, Status):
        return value
    try:
        return Status[str(value).strip().upper()]
    except KeyError:
        names = ", ".join(s.name for s in Status)
        raise RegistrationError(f"unknown gRPC status {value!r}; use one of {names}") from None


def _checked(mapping: Mapping[type[BaseException], StatusLike]) -> dict[type[BaseException], Status]:
    checked = {}
    for exc_type, status in mapping.items():
        if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            raise RegistrationError(f"error_map keys must be exception classes, got {exc_type!r}")
        checked[exc_type] = to_status(status)
    return checked


class ErrorMap:
    """A plugin mapping exception types to statuses; ``BlazeApp(error_map=...)`` makes one.

    ::

        app = BlazeApp(plugins=[ErrorMap({KeyError: "NOT_FOUND"})])
    """

    def __init__(self, mapping: Mapping[type[BaseException], StatusLike]) -> None:
        self.mapping = _checked(mapping)
        # Unique per instance: two apps served together may both map ValueError.
        self.__name__ = f"app-error-map-{id(self):x}"

    @hookimpl(trylast=True)
    def blazerpc_startup(self, context: ServerContext) -> None:
        # trylast: called after the defaults and --error-map, so the app's entries win.
        for exc_type, status in self.mapping.items():
            context.errors.register(exc_type, status)


def parse_error_map(entries: Iterable[str]) -> dict[type[BaseException], Status]:
    """``[module:]Class=STATUS`` entries (from ``--error-map``) as a mapping."""
    mapping: dict[type[BaseException], StatusLike] = {}
    for entry in entries:
        target, sep, status = entry.rpartition("=")
        if not sep or not target:
            raise RegistrationError(f"--error-map {entry!r}: expected [module:]ExceptionClass=STATUS")
        mapping[_exception_class(target.strip())] = status
    return _checked(mapping)


def _exception_class(target: str) -> type[BaseException]:
    module_name, sep, attr = target.rpartition(":")
    try:
        module = importlib.import_module(module_name) if sep else builtins
        found = module
        for part in attr.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise RegistrationError(f"--error-map: cannot find exception {target!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise RegistrationError(f"--error-map: {target!r} is not an exception class")
    return found


def _validate(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    try:
        parse_error_map(value)
    except RegistrationError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


@hookimpl
def blazerpc_cli_options() -> Sequence[click.Option]:
    return [
        click.Option(
            ["--error-map", OPTION], envvar="BLAZERPC_ERROR_MAP", show_envvar=True, multiple=True,
            callback=_validate,
            help="Answer an exception with a status: [module:]ExceptionClass=STATUS, "
                 "e.g. ValueError=INVALID_ARGUMENT (repeatable).",
        )
    ]


@hookimpl(tryfirst=True)
def blazerpc_startup(context: ServerContext) -> None:
    # tryfirst: registered before the operator's and the app's, so theirs override these.
    for exc_type, status in DEFAULTS.items():
        context.errors.register(exc_type, status)
    for exc_type, status in parse_error_map(context.settings.extra.get(OPTION) or ()).items():
        context.errors.register(exc_type, status)
