"""blazerpc_core.schema.signature: an artifact's named inputs and outputs served like a typed function."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest

from blazerpc_core import BlazeApp, TensorInput, TensorOutput
from blazerpc_core.schema.signature import attach_signature, field_names, output_record
from blazerpc_core.spec import make_spec
from blazerpc_core.testing import array_from_proto, tensor_proto


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (["input:0", "mask"], ["input_0", "mask"]),
        (["0", "", ":"], ["input_0", "input_1", "input_2"]),
        (["class", "lambda"], ["class_", "lambda_"]),
        (["a.b", "a:b", "a_b"], ["a_b", "a_b_2", "a_b_3"]),
    ],
)
def test_field_names_are_unique_identifiers_in_order(raw: list[str], names: list[str]) -> None:
    assert field_names(raw, fallback="input") == names
    assert all(name.isidentifier() for name in names)


class Runner:
    """Stands in for a framework session: positional arrays in, one array per output out."""

    record: Any = None

    def __call__(self, features: Any) -> Any:
        return self.record(scores=features * 2, label=np.argmax(features, axis=1))


def test_a_runner_with_an_attached_signature_is_served_like_an_annotated_function(
    blazerpc_serve: Any, blazerpc_connect: Any
) -> None:
    runner = Runner()
    inputs = list(zip(field_names(["features:0"], fallback="input"), [TensorInput[np.float32, "batch", 3]],
                      strict=True))
    record = output_record("RunnerOutputs", [("scores", TensorOutput[np.float32, "batch", 3]),
                                             ("label", TensorOutput[np.int64, "batch"])])
    runner.record = record
    attach_signature(runner, inputs, record)
    assert list(inspect.signature(runner).parameters) == ["features_0"]
    app = BlazeApp()
    app.add(make_spec(runner, name="runner"))
    conn = blazerpc_connect(blazerpc_serve(app))
    assert [f.name for f in conn.pb2.RunnerRequest.DESCRIPTOR.fields] == ["features_0"]
    assert [f.name for f in conn.pb2.RunnerResponse.DESCRIPTOR.fields] == ["scores", "label"]
    x = np.array([[1, 5, 2], [9, 0, 0]], np.float32)
    reply = conn.stub.PredictRunner(conn.pb2.RunnerRequest(features_0=tensor_proto(conn.pb2, x)), timeout=30)
    np.testing.assert_array_equal(array_from_proto(reply.scores), x * 2)
    np.testing.assert_array_equal(array_from_proto(reply.label), [1, 0])
