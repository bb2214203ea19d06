"""TensorFlow thread pools: they can only be sized before TF runs its first operation.

An app module usually builds its Keras model when it is imported, which
``blazerpc serve app.py`` does before any server hook runs. So the command-line options
apply their value while the command line is parsed (a click callback), and the startup
hook only checks, for servers built in code, that what was asked is what TF has.
"""

from __future__ import annotations

import logging
from typing import Any

import click

log = logging.getLogger("blazerpc.tf")
KINDS = {"tf_intra_op_threads": "intra_op", "tf_inter_op_threads": "inter_op"}


def apply(option: str, value: int | None) -> None:
    """Size one TF thread pool; warns when TF already started with another size."""
    if value is None:
        return
    import tensorflow as tf

    kind = KINDS[option]
    threading = tf.config.threading
    setter = getattr(threading, f"set_{kind}_parallelism_threads")
    getter = getattr(threading, f"get_{kind}_parallelism_threads")
    try:
        setter(value)
    except RuntimeError:
        if getter() != value:
            log.warning(
                "TensorFlow was already running, so its %s threads stay at %s instead of %s; "
                "pass --%s on the command line, or set it before building models",
                kind.replace("_", "-"), getter() or "automatic", value, option.replace("_", "-"),
            )


def callback(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Apply the option as soon as it is parsed, before the app's models are built."""
    if value is not None and param.name:
        apply(param.name, value)
    return value


def options() -> list[click.Option]:
    return [
        click.Option(
            ["--tf-intra-op-threads"], envvar="BLAZERPC_TF_INTRA_OP_THREADS", show_envvar=True,
            type=click.IntRange(min=0), default=None, callback=callback, expose_value=True,
            help="Threads one TensorFlow operation may use (0: TensorFlow decides).",
        ),
        click.Option(
            ["--tf-inter-op-threads"], envvar="BLAZERPC_TF_INTER_OP_THREADS", show_envvar=True,
            type=click.IntRange(min=0), default=None, callback=callback, expose_value=True,
            help="Threads TensorFlow may use to run independent operations in parallel.",
        ),
    ]


def apply_settings(extra: dict[str, Any]) -> None:
    for option in KINDS:
        apply(option, extra.get(option))
