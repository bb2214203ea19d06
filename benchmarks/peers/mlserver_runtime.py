"""The MLServer runtime of ``peers/mlserver_server.py`` (imported by MLServer, in its virtualenv only)."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from benchmarks import model


class Matmul(MLModel):  # type: ignore[misc]
    """``x @ W``; with ``parameters.extra.accelerator`` true, the accelerator-like model."""

    async def load(self) -> bool:
        extra = (self.settings.parameters.extra or {}) if self.settings.parameters else {}
        self._call = model.accelerator if extra.get("accelerator") else model.matmul
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype("float32", copy=False)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("result", self._call(x))])
