"""Default plugin: the built-in batching policies, ``size-or-timeout`` and ``adaptive``.

Batching knobs merge model > app > server (``blazerpc serve --max-batch-size ...``); the
server's knobs are defaults only and never turn batching on. The policy is the one named
by the model's (or its app's) ``policy`` knob, else ``adaptive`` when the model or its
app sets a latency target (``max_latency_ms``), else the server's ``--batch-policy``, else
``size-or-timeout``. Models that are not batched (see
:mod:`blazerpc_core.runtime.plan`) get one call per request. A third-party plugin that
answers ``blazerpc_batching_policy`` for a model overrides all of this for that model.
"""

from __future__ import annotations

from collections.abc import Callable

from blazerpc_core.errors import RegistrationError
from blazerpc_core.markers import hookimpl
from blazerpc_core.method import CompiledModel
from blazerpc_core.runtime.adaptive import Adaptive
from blazerpc_core.runtime.batcher import Batcher
from blazerpc_core.runtime.direct import DirectRunner
from blazerpc_core.runtime.dispatch import BatchConfig, DispatchRule, SizeOrTimeout
from blazerpc_core.runtime.events import BatchEvents
from blazerpc_core.runtime.plan import batch_plan
from blazerpc_core.runtime.policy import BatchingPolicy, ModelInvoker, Runner
from blazerpc_core.settings import BatchSettings, ServeSettings
from blazerpc_core.spec import ModelSpec

#: Built-in dispatch rules by policy name; each batcher gets a fresh rule (rules learn per model).
BUILTIN_RULES: dict[str, Callable[[], DispatchRule]] = {
    SizeOrTimeout.name: SizeOrTimeout,
    Adaptive.name: Adaptive,
}


def policy_name(model: BatchSettings, server: BatchSettings) -> str:
    """The policy a model asks for: its own (or its app's) choice first, then the server's.

    A latency target set on the model or its app implies ``adaptive``; a server-wide
    ``--max-latency-ms`` is only the target that ``adaptive`` uses.
    """
    if model.policy:
        return model.policy
    if model.max_latency_ms is not None:
        return Adaptive.name
    return server.policy or SizeOrTimeout.name


class BuiltinPolicy:
    """Batches a batched model with a built-in rule; serves any other model one call per request."""

    def __init__(self, name: str, settings: BatchSettings) -> None:
        self.name = name
        self.settings = settings

    def create_runner(self, model: CompiledModel, invoker: ModelInvoker, events: BatchEvents) -> Runner:
        plan = batch_plan(model)
        if plan is None:
            return DirectRunner(invoker, model.spec.streaming)
        label = model.label
        make_rule = BUILTIN_RULES.get(self.name)
        if make_rule is None:
            raise RegistrationError(
                f"model {label} asks for batching policy {self.name!r}, which no plugin provides "
                f"(built-in: {', '.join(sorted(BUILTIN_RULES))})"
            )
        config = BatchConfig.from_settings(self.settings, label)
        return Batcher(model, invoker, events, plan=plan, config=config, rule=make_rule())


@hookimpl(trylast=True)
def blazerpc_batching_policy(spec: ModelSpec, settings: ServeSettings) -> BatchingPolicy | None:
    merged = spec.batching.merged_over(settings.batching)
    return BuiltinPolicy(policy_name(spec.batching, settings.batching), merged)
