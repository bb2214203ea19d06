"""The ``tf`` plugin: TF tensor types, SavedModel directories, thread pools.

Registered through the ``blazerpc.plugins`` entry point. Importing it does not import
TensorFlow: the type hook only recognises ``tf.Tensor`` once the user's code has
imported TensorFlow, and a SavedModel target imports it when it is loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from blazerpc_core import ModelSpec, ServeSettings, hookimpl
from blazerpc_core.schema.fields import FieldMapping, TypeContext
from blazerpc_tf import threads
from blazerpc_tf.saved_model import DEFAULT_SIGNATURE, is_saved_model, load_model
from blazerpc_tf.tensors import TFTensorSpec, tf_mapping

if TYPE_CHECKING:
    from blazerpc_core.context import ServerContext


@hookimpl
def blazerpc_map_type(annotation: Any, context: TypeContext) -> FieldMapping | None:
    if isinstance(annotation, TFTensorSpec):
        return tf_mapping(context, annotation)
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(annotation, type) and annotation is tf.Tensor:
        return tf_mapping(context, TFTensorSpec(None, None))
    return None


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
    path = Path(target)
    if not is_saved_model(path):
        return None
    signature = settings.extra.get("tf_signature") or DEFAULT_SIGNATURE
    return [load_model(path, settings.model_name, signature=signature)]


@hookimpl
def blazerpc_startup(context: ServerContext) -> None:
    if "tensorflow" in sys.modules:
        threads.apply_settings(context.settings.extra)
