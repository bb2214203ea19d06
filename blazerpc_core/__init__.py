"""blazerpc: serve typed Python functions as gRPC models.

::

    from blazerpc_core import BlazeApp

    app = BlazeApp()

    @app.model("add")
    def add(a: float, b: float) -> float:
        return a + b

Then ``blazerpc serve app.py``.
"""

from blazerpc_core.app import BlazeApp, model
from blazerpc_core.errors import (
    BlazeError,
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    PermissionDenied,
    PluginError,
    RegistrationError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from blazerpc_core.hookspecs import hookimpl
from blazerpc_core.middleware import CallContext, Middleware
from blazerpc_core.registry import ModelSpec
from blazerpc_core.schema.tensors import TensorInput, TensorOutput
from blazerpc_core.settings import ServeSettings

__all__ = [
    "BlazeApp",
    "BlazeError",
    "CallContext",
    "Cancelled",
    "DeadlineExceeded",
    "InvalidArgument",
    "Middleware",
    "ModelSpec",
    "PermissionDenied",
    "PluginError",
    "RegistrationError",
    "ResourceExhausted",
    "ServeSettings",
    "TensorInput",
    "TensorOutput",
    "Unauthenticated",
    "Unavailable",
    "hookimpl",
    "model",
]
