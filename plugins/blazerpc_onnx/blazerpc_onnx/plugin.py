"""The ``onnx`` plugin: ``blazerpc serve model.onnx``, its command-line options, warm-up.

Registered through the ``blazerpc.plugins`` entry point; importing it does not import
onnxruntime (that happens when an ``.onnx`` target is loaded).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from blazerpc_core import ModelSpec, ServeSettings, hookimpl
from blazerpc_onnx.model import OnnxModel, load_model
from blazerpc_onnx.session import parse_providers

if TYPE_CHECKING:
    from blazerpc_core.context import ServerContext

log = logging.getLogger("blazerpc.onnx")
SUFFIX = ".onnx"


@hookimpl
def blazerpc_cli_options() -> list[click.Option]:
    return [
        click.Option(
            ["--onnx-providers"], envvar="BLAZERPC_ONNX_PROVIDERS", show_envvar=True, default=None,
            help="ONNX Runtime execution providers for .onnx targets, comma-separated in order of "
                 "preference (e.g. cuda,cpu). Default: every local provider.",
        ),
        click.Option(
            ["--onnx-intra-op-threads"], envvar="BLAZERPC_ONNX_INTRA_OP_THREADS", show_envvar=True,
            type=click.IntRange(min=0), default=None,
            help="Threads one ONNX Runtime operator may use (0: onnxruntime decides).",
        ),
        click.Option(
            ["--onnx-inter-op-threads"], envvar="BLAZERPC_ONNX_INTER_OP_THREADS", show_envvar=True,
            type=click.IntRange(min=0), default=None,
            help="Threads ONNX Runtime may use to run independent operators in parallel.",
        ),
    ]


@hookimpl
def blazerpc_load_target(target: str, settings: ServeSettings) -> Sequence[ModelSpec] | None:
    if not target.lower().endswith(SUFFIX):
        return None
    extra = settings.extra
    return [
        load_model(
            Path(target),
            settings.model_name,
            providers=parse_providers(extra.get("onnx_providers")),
            intra_op_threads=extra.get("onnx_intra_op_threads"),
            inter_op_threads=extra.get("onnx_inter_op_threads"),
        )
    ]


@hookimpl
async def blazerpc_startup(context: ServerContext) -> None:
    """Run each ONNX model once before health reports SERVING, so no client pays for it."""
    loop = asyncio.get_running_loop()
    for spec in context.models:
        if isinstance(spec.func, OnnxModel):
            try:
                await loop.run_in_executor(context.pool, spec.func.warm_up)
            except Exception as exc:  # a graph may reject zeros; serving works all the same
                log.warning("warm-up of ONNX model %s skipped: %s", spec.label, exc)
