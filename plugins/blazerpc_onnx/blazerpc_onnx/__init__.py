"""blazerpc-onnx: serve ONNX graphs with ONNX Runtime.

Install it and ``blazerpc serve model.onnx`` serves the graph: one request field per
graph input, one response field per output, dtypes and shapes from the graph. In an
app, :func:`load_model` gives a model spec::

    from blazerpc_core import BlazeApp
    import blazerpc_onnx

    app = BlazeApp()
    app.add(blazerpc_onnx.load_model("mlp.onnx", name="classify"))
"""

from blazerpc_onnx.model import OnnxModel, load_model

__all__ = ["OnnxModel", "load_model"]
