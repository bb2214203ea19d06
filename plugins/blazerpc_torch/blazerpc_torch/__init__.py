"""blazerpc-torch: serve PyTorch models.

Install it and ``torch.Tensor`` parameters and results work in any model::

    import torch
    from blazerpc_core import BlazeApp

    app = BlazeApp()
    net = torch.nn.Linear(512, 10).eval()

    @app.model("classify")
    def classify(x: torch.Tensor) -> torch.Tensor:
        return net(x)

``TorchTensor[torch.float32, "batch", 512]`` declares dtype and shape (and, with a first
dimension named ``batch``, turns batching on). ``blazerpc serve model.pt`` serves a
TorchScript archive and ``blazerpc serve model.pt2`` a torch.export program;
:func:`load_model` does the same from Python.
"""

from blazerpc_torch.files import load_model
from blazerpc_torch.tensors import TorchTensor, TorchTensorSpec

__all__ = ["TorchTensor", "TorchTensorSpec", "load_model"]
