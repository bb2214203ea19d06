"""blazerpc: serve typed Python functions as gRPC models.

::

    from blazerpc_core import BlazeApp

    app = BlazeApp()

    @app.model("add")
    def add(a: float, b: float) -> float:
        return a + b

Then ``blazerpc serve app.py``, or from Python ``blazerpc_core.run(app, port=50051)``, or
``async with build_server(app, ServeSettings(port=50051)):`` inside a program of your own.
"""

from blazerpc_core.app import BlazeApp, model
from blazerpc_core.build import build_server, run
from blazerpc_core.call import CallContext, Middleware
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
from blazerpc_core.markers import hookimpl
from blazerpc_core.schema.tensors import TensorInput, TensorOutput
from blazerpc_core.settings import ServeSettings
from blazerpc_core.spec import ModelSpec

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
    "build_server",
    "hookimpl",
    "model",
    "run",
]
