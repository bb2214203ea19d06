"""The plugin manager factory: default plugins, entry-point plugins, app plugins, disabling, listing.

There is no global manager. Each server, app check or CLI call makes its own with
:func:`make_plugin_manager`, so tests and embedded servers never share state. Every
plugin (an app's too) is registered before any hook runs.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from blazerpc_core import hookspecs
from blazerpc_core.errors import PluginError
from blazerpc_core.markers import PROJECT

log = logging.getLogger("blazerpc.plugins")
PLUGIN_GROUP = "blazerpc.plugins"
DISABLE_ENV = "BLAZERPC_DISABLE_PLUGINS"

#: Built-in behaviour, each an ordinary plugin registered under the name on the left.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("builtin-types", "blazerpc_core.defaults.types"),
    ("tensors", "blazerpc_core.defaults.tensor_types"),
    ("batching", "blazerpc_core.defaults.batching"),
    ("python-targets", "blazerpc_core.defaults.targets"),
    ("health", "blazerpc_core.defaults.health"),
    ("reflection", "blazerpc_core.defaults.reflection"),
    ("management", "blazerpc_core.defaults.management"),
    ("error-map", "blazerpc_core.defaults.error_map"),
    # Middleware plugins: their order here is the chain's order, outermost first.
    ("request-id", "blazerpc_core.observability.request_id"),
    ("access-log", "blazerpc_core.observability.access_log"),
    ("metrics", "blazerpc_core.observability.metrics"),
    ("auth", "blazerpc_core.security.auth"),
    ("rate-limit", "blazerpc_core.security.ratelimit"),
    # Last, so its statistics middleware is innermost: it counts calls that reached a model.
    ("open-inference", "blazerpc_core.defaults.open_inference"),
)
#: Defaults the server cannot work without: they can be overridden by a plugin, never disabled.
ESSENTIAL = frozenset({"builtin-types", "tensors", "batching", "python-targets", "health", "reflection"})


@dataclass(frozen=True)
class PluginInfo:
    """One row of ``blazerpc plugins``."""

    name: str
    source: str
    hooks: tuple[str, ...]
    disabled: bool = False


def disabled_from_env() -> tuple[str, ...]:
    """Plugin names listed (comma-separated) in ``BLAZERPC_DISABLE_PLUGINS``."""
    raw = os.environ.get(DISABLE_ENV, "")
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def plugin_name(plugin: Any) -> str:
    """The name a plugin object is registered (and disabled) under."""
    return getattr(plugin, "__name__", None) or repr(plugin)


def make_plugin_manager(
    *,
    disabled: Iterable[str] = (),
    plugins: Sequence[Any] = (),
    load_entry_points: bool = True,
    skip_broken: bool = False,
) -> pluggy.PluginManager:
    """A fresh manager with the default plugins, installed plugins and ``plugins`` (an app's, a test's).

    ``disabled`` names plugins (default or installed) not to load; names come from
    ``blazerpc plugins``. Disabling an essential default, or a name no plugin has, is a
    :class:`PluginError` that lists the names. An import error names the failing
    plugin (with ``skip_broken``, it is logged and left out instead); a hook
    implementation that matches no spec fails here rather than being ignored.
    """
    blocked = set(disabled) | set(disabled_from_env())
    essential = sorted(blocked & ESSENTIAL)
    if essential:
        raise PluginError(
            f"plugin {essential[0]!r} cannot be disabled: the server needs it (a plugin may override its "
            "answers instead). Essential plugins: " + ", ".join(sorted(ESSENTIAL))
        )
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    known = {name for name, _ in DEFAULT_PLUGINS}
    for name, module_name in DEFAULT_PLUGINS:
        if name not in blocked:
            pm.register(importlib.import_module(module_name), name=name)
        else:
            pm.set_blocked(name)
    if load_entry_points:
        for ep in entry_points(group=PLUGIN_GROUP):
            known.add(ep.name)
            if ep.name in blocked:
                pm.set_blocked(ep.name)
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                if skip_broken:
                    log.warning("plugin %r (%s) failed to import and is left out: %s: %s",
                                ep.name, ep.value, type(exc).__name__, exc)
                    continue
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}) failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            _register(pm, plugin, ep.name)
    for plugin in plugins:
        name = plugin_name(plugin)
        known.add(name)
        if name not in blocked and not pm.is_registered(plugin):
            _register(pm, plugin, name)
    unknown = sorted(blocked - known)
    if unknown and load_entry_points:
        raise PluginError(
            f"cannot disable plugin {unknown[0]!r}: no plugin has that name. Known plugins: "
            + ", ".join(sorted(known))
        )
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from exc
    return pm


def _register(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} is invalid: {exc}") from exc
    except ValueError as exc:
        raise PluginError(f"plugin {name!r} could not be registered: {exc}") from exc


def describe_plugins(pm: pluggy.PluginManager, *, disabled: Iterable[str] = ()) -> list[PluginInfo]:
    """What is loaded (and what was disabled), for ``blazerpc plugins``."""
    default_names = {name for name, _ in DEFAULT_PLUGINS}
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        if name in ESSENTIAL:
            source = "default (essential)"
        elif name in default_names:
            source = "default"
        else:
            source = getattr(plugin, "__name__", repr(plugin))
        rows.append(PluginInfo(name=name, source=source, hooks=hooks))
    for name in sorted(set(disabled) | set(disabled_from_env())):
        rows.append(PluginInfo(name=name, source="-", hooks=(), disabled=True))
    return rows
