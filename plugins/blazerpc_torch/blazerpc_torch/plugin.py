"""The ``torch`` plugin: torch tensor types, model files, device and threads.

Registered through the ``blazerpc.plugins`` entry point. Importing it does not import
torch: the type hook only recognises ``torch.Tensor`` once the user's code has imported
torch, and model files import it when they are loaded.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import click

from blazerpc_core import ModelSpec, ServeSettings, hookimpl
from blazerpc_core.plugin import BatchingPolicy, FieldMapping, ServerContext, TypeContext
from blazerpc_torch.calls import TorchPolicy, resolve_device, uses_torch
from blazerpc_torch.files import load_model, torch_file
from blazerpc_torch.tensors import TORCH


@hookimpl
def blazerpc_map_type(annotation: Any, context: TypeContext) -> FieldMapping | None:
    return TORCH.map_type(annotation, context)


@hookimpl(wrapper=True)
def blazerpc_batching_policy(spec: ModelSpec, settings: ServeSettings) -> Generator[None, Any, BatchingPolicy | None]:
    """Wrap the chosen policy so torch models run on the device under inference mode (see calls.py)."""
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
    path = torch_file(target)
    if path is None:
        return None
    return [load_model(path, settings.model_name, device=settings.extra.get("torch_device"))]


@hookimpl
def blazerpc_startup(context: ServerContext) -> None:
    threads = context.settings.extra.get("torch_threads")
    if threads and any(uses_torch(spec) for spec in context.models):
        import torch

        torch.set_num_threads(int(threads))
