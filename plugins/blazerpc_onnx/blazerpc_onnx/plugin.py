"""The ``onnx`` plugin: ``blazerpc serve model.onnx`` and its command-line options.

Registered through the ``blazerpc.plugins`` entry point; importing it does not import
onnxruntime (that happens when an ``.onnx`` target is loaded). Each model is warmed by the
server itself (:meth:`~blazerpc_onnx.model.OnnxModel.warmup`) before health reports SERVING.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from blazerpc_core import ModelSpec, ServeSettings, hookimpl
from blazerpc_core.plugin import model_file
from blazerpc_onnx.model import load_model
from blazerpc_onnx.session import parse_providers

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
    path = model_file(target, (SUFFIX,))
    if path is None:
        return None
    extra = settings.extra
    return [
        load_model(
            path,
            settings.model_name,
            providers=parse_providers(extra.get("onnx_providers")),
            intra_op_threads=extra.get("onnx_intra_op_threads"),
            inter_op_threads=extra.get("onnx_inter_op_threads"),
        )
    ]
