"""The pluggy markers every plugin uses: ``hookimpl`` to implement a hook, ``hookspec`` to declare one.

A leaf module, so that plugins (and the default plugins inside the core) mark their hook
functions without importing the hook contract or anything above it.
"""

from __future__ import annotations

import pluggy

PROJECT = "blazerpc"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
