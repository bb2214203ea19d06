"""Default plugin: the built-in batching policies."""

from __future__ import annotations

from blazerpc_core.hookspecs import hookimpl
from blazerpc_core.registry import ModelSpec
from blazerpc_core.runtime.policy import BatchingPolicy, DirectPolicy
from blazerpc_core.settings import ServeSettings


@hookimpl(trylast=True)
def blazerpc_batching_policy(spec: ModelSpec, settings: ServeSettings) -> BatchingPolicy | None:
    return DirectPolicy()
