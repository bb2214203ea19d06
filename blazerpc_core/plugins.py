"""The plugin manager factory: default plugins, entry-point plugins, disabling, listing.

There is no global manager. Each app, server or CLI call makes its own with
:func:`make_plugin_manager`, so tests and embedded servers never share state.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from blazerpc_core import hookspecs
from blazerpc_core.errors import PluginError

PLUGIN_GROUP = "blazerpc.plugins"
DISABLE_ENV = "BLAZERPC_DISABLE_PLUGINS"

#: Built-in behaviour, each an ordinary plugin registered under the name on the left.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("builtin-types", "blazerpc_core.schema.builtin_types"),
    ("tensors", "blazerpc_core.schema.tensors"),
    ("batching", "blazerpc_core.runtime.policies"),
    ("python-targets", "blazerpc_core.discovery"),
    ("error-map", "blazerpc_core.error_map"),
    # Middleware plugins: their order here is the chain's order, outermost first.
    ("request-id", "blazerpc_core.observability.request_id"),
    ("tracing", "blazerpc_core.observability.tracing"),
    ("access-log", "blazerpc_core.observability.access_log"),
    ("metrics", "blazerpc_core.observability.metrics"),
    ("auth", "blazerpc_core.security.auth"),
    ("rate-limit", "blazerpc_core.security.ratelimit"),
)


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


def make_plugin_manager(
    *,
    disabled: Iterable[str] = (),
    plugins: Sequence[Any] = (),
    load_entry_points: bool = True,
) -> pluggy.PluginManager:
    """A fresh manager with the default plugins, installed plugins and ``plugins``.

    ``disabled`` names plugins (default or installed) not to load; names come from
    ``blazerpc plugins``. An import error names the failing plugin; a hook
    implementation that matches no spec fails here rather than being ignored.
    """
    blocked = set(disabled) | set(disabled_from_env())
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, module_name in DEFAULT_PLUGINS:
        if name not in blocked:
            pm.register(importlib.import_module(module_name), name=name)
        else:
            pm.set_blocked(name)
    if load_entry_points:
        for ep in entry_points(group=PLUGIN_GROUP):
            if ep.name in blocked:
                pm.set_blocked(ep.name)
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}) failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            _register(pm, plugin, ep.name)
    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or repr(plugin)
        if name not in blocked:
            _register(pm, plugin, name)
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
        source = "default" if name in default_names else getattr(plugin, "__name__", repr(plugin))
        rows.append(PluginInfo(name=name, source=source, hooks=hooks))
    for name in sorted(set(disabled) | set(disabled_from_env())):
        rows.append(PluginInfo(name=name, source="-", hooks=(), disabled=True))
    return rows
