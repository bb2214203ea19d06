"""The ``tf`` plugin: TF tensor types, SavedModel directories, thread pools.

Registered through the ``blazerpc.plugins`` entry point. Importing it does not import
TensorFlow: the type hook only recognises ``tf.Tensor`` once the user's code has
imported TensorFlow, and a SavedModel target imports it when it is loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from blazerpc_core import ModelSpec, ServeSettings, hookimpl
from blazerpc_core.plugin import FieldMapping, ServerContext, TypeContext
from blazerpc_tf import threads
from blazerpc_tf.saved_model import DEFAULT_SIGNATURE, load_model, saved_model_dir
from blazerpc_tf.tensors import TF


@hookimpl
def blazerpc_map_type(annotation: Any, context: TypeContext) -> FieldMapping | None:
    return TF.map_type(annotation, context)


@hookimpl
def blazerpc_cli_options() -> list[click.Option]:
    return [
        *threads.options(),
        click.Option(
            ["--tf-signature"], envvar="BLAZERPC_TF_SIGNATURE", show_envvar=True, default=None,
            help=f"SavedModel signature a SavedModel TARGET serves. Default: {DEFAULT_SIGNATURE}.",
        ),
    ]


@hookimpl
def blazerpc_load_target(target: str, settings: ServeSettings) -> Sequence[ModelSpec] | None:
    path = saved_model_dir(target)
    if path is None:
        return None
    signature = settings.extra.get("tf_signature") or DEFAULT_SIGNATURE
    return [load_model(path, settings.model_name, signature=signature)]


@hookimpl
def blazerpc_startup(context: ServerContext) -> None:
    if "tensorflow" in sys.modules:
        threads.apply_settings(context.settings.extra)
