"""Default plugin ``open-inference``: the Open Inference Protocol (KServe v2, Triton) beside the native service.

``tritonclient.grpc``, KServe and Triton tooling call a blazerpc server unchanged: each
model with a tensor form (:mod:`.tensor_form`) is reachable through ModelInfer and
ModelStreamInfer, described by ModelMetadata and ModelConfig, counted by
ModelStatistics, and listed, loaded and unloaded through the repository rpcs. Calls go
through ``context.calls``, so the batcher, middleware, metrics, auth and limits apply as
to native calls. The descriptors live in the server's private pool, so reflection lists
the service; the server gives it a health key like any hosted service. Disable it with
``--disable-plugin open-inference``.

Module map: :mod:`.descriptors` (the protocol's messages), :mod:`.datatypes`,
:mod:`.tensor_form`, :mod:`.convert` (tensors ↔ Python values), :mod:`.infer`,
:mod:`.metadata`, :mod:`.statistics`, :mod:`.repository`, :mod:`.service`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from blazerpc_core.defaults.open_inference.descriptors import grpc_service_file, messages, model_config_file
from blazerpc_core.defaults.open_inference.repository import Repository, repository_checker
from blazerpc_core.defaults.open_inference.service import OpenInferenceService
from blazerpc_core.defaults.open_inference.statistics import Statistics
from blazerpc_core.defaults.open_inference.tensor_form import Forms
from blazerpc_core.errors import RegistrationError
from blazerpc_core.markers import hookimpl

if TYPE_CHECKING:
    from blazerpc_core.call import Middleware
    from blazerpc_core.context import ServerContext
    from blazerpc_core.settings import ServeSettings


@hookimpl
def blazerpc_middleware(settings: ServeSettings) -> Sequence[Middleware]:
    """The statistics middleware (innermost: it counts the calls that reached a model's runner)."""
    return [Statistics(Forms())]


def _statistics(context: ServerContext) -> Statistics:
    found = next((m for m in context.middleware if isinstance(m, Statistics)), None)
    if found is None:
        raise RegistrationError("the open-inference plugin's statistics middleware is missing from the chain")
    return found


@hookimpl
def blazerpc_services(context: ServerContext) -> list[Any]:
    if context.calls is None or context.host is None:
        raise RegistrationError("the open-inference plugin needs a server context with calls and a model host")
    statistics = _statistics(context)
    forms = statistics.forms
    for file in (model_config_file(), grpc_service_file()):
        context.descriptors.add_file(file)
    repository = Repository(context.host, context.settings, forms, repository_checker(context.settings))
    return [OpenInferenceService(
        host=context.host, calls=context.calls, health=lambda: context.health, settings=context.settings, forms=forms,
        statistics=statistics, repository=repository, messages=messages(),
    )]


@hookimpl
def blazerpc_startup(context: ServerContext) -> None:
    """Hear about batches: the executions and queue times of batched models."""
    context.batch_events.subscribe(_statistics(context))
