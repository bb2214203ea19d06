"""The ``torch`` plugin: torch tensor types, model files, device and threads.

Registered through the ``blazerpc.plugins`` entry point. Importing it does not import
torch: the type hook only recognises ``torch.Tensor`` once the user's code has imported
torch, and model files import it when they are loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from blazerpc_core import ModelSpec, ServeSettings, hookimpl
from blazerpc_core.schema.fields import FieldMapping, TypeContext
from blazerpc_torch.calls import TorchPolicy, resolve_device, uses_torch
from blazerpc_torch.files import EXPORT_SUFFIXES, SCRIPT_SUFFIXES, load_model
from blazerpc_torch.tensors import TorchTensorSpec, torch_mapping

if TYPE_CHECKING:
    from blazerpc_core.context import ServerContext
    from blazerpc_core.runtime.policy import BatchingPolicy


@hookimpl
def blazerpc_map_type(annotation: Any, context: TypeContext) -> FieldMapping | None:
    if isinstance(annotation, TorchTensorSpec):
        return torch_mapping(context, annotation)
    torch = sys.modules.get("torch")
    if torch is not None and annotation is torch.Tensor:
        return torch_mapping(context, TorchTensorSpec(None, None))
    return None


@hookimpl(wrapper=True)
def blazerpc_batching_policy(spec: ModelSpec, settings: ServeSettings) -> Generator[None, Any, BatchingPolicy | None]:
    """Wrap the chosen policy so torch models run on the device under inference_mode (see calls.py)."""
    policy: BatchingPolicy | None = yield
    if policy is None or not uses_torch(spec):
        return policy
    return TorchPolicy(policy, resolve_device(settings.extra.get("torch_device")))


@hookimpl
def blazerpc_cli_options() -> list[click.Option]:
    return [
        click.Option(
            ["--torch-device"], envvar="BLAZERPC_TORCH_DEVICE", show_envvar=True, default=None,
            help="Device torch models run on (cpu, cuda, cuda:1, mps, ...); inputs are moved there. Default: cpu.",
        ),
        click.Option(
            ["--torch-threads"], envvar="BLAZERPC_TORCH_THREADS", show_envvar=True,
            type=click.IntRange(min=1), default=None,
            help="Threads torch uses inside one operator (torch.set_num_threads).",
        ),
    ]


@hookimpl
def blazerpc_load_target(target: str, settings: ServeSettings) -> Sequence[ModelSpec] | None:
    if not target.lower().endswith(SCRIPT_SUFFIXES + EXPORT_SUFFIXES):
        return None
    return [load_model(Path(target), settings.model_name, device=settings.extra.get("torch_device"))]


@hookimpl
def blazerpc_startup(context: ServerContext) -> None:
    threads = context.settings.extra.get("torch_threads")
    if threads and any(uses_torch(spec) for spec in context.models):
        import torch

        torch.set_num_threads(int(threads))
