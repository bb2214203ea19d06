"""The descriptor is the single source of truth: protoc reads our text back to the same descriptor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from blazerpc_core import BlazeApp, RegistrationError, TensorInput, model
from blazerpc_core.build import assemble
from blazerpc_core.naming import pascal_case
from blazerpc_core.registry import ModelRegistry
from blazerpc_core.schema.proto_text import render_proto
from blazerpc_core.schema.tensors import describe_dims, parse_dims, split_annotation
from tests.apps import varied_app


def _schema(app: BlazeApp):
    return assemble(app, load_entry_points=False).schema()


def test_protoc_parses_the_rendered_text_back_to_our_descriptor(tmp_path: Path):
    schema = _schema(varied_app())
    (tmp_path / "blaze_service.proto").write_text(render_proto(schema.file))
    out = tmp_path / "set.pb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}", f"--descriptor_set_out={out}",
         str(tmp_path / "blaze_service.proto")],
        check=True, capture_output=True,
    )
    parsed = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    assert parsed == schema.file


def test_rpc_and_message_names_follow_the_contract():
    app = BlazeApp()

    @app.model("text-sentiment")
    def f(text: list[str]) -> list[float]:
        return [0.0] * len(text)

    text = render_proto(_schema(app).file)
    assert "package blazerpc;" in text
    assert "service InferenceService {" in text
    assert "rpc PredictTextSentiment(TextSentimentRequest) returns (TextSentimentResponse);" in text
    assert "repeated string text = 1;" in text and "repeated double result = 1;" in text


@pytest.mark.parametrize(
    ("name", "pascal"), [("text-sentiment", "TextSentiment"), ("a_b.c", "ABC"), ("gpt2", "Gpt2")]
)
def test_pascal_case(name, pascal):
    assert pascal_case(name) == pascal


@pytest.mark.parametrize("bad", ["", "3d-model", "has space", "trailing-", "ünïcode", "a--b"])
def test_invalid_model_names_are_refused_at_the_decorator(bad):
    app = BlazeApp()
    with pytest.raises(RegistrationError, match="invalid model name"):
        @app.model(bad)
        def f(x: int) -> int:
            return x


def test_invalid_version_is_refused():
    with pytest.raises(RegistrationError, match="invalid version"):
        @model("ok", version="1 beta")
        def f(x: int) -> int:
            return x


def test_duplicate_name_and_version_is_refused():
    app = BlazeApp()

    @app.model("dup")
    def f(x: int) -> int:
        return x

    with pytest.raises(RegistrationError, match="already registered"):
        @app.model("dup")
        def g(x: int) -> int:
            return x


def test_two_names_with_the_same_pascal_are_refused():
    app = BlazeApp()

    @app.model("text-sentiment")
    def f(x: int) -> int:
        return x

    with pytest.raises(RegistrationError, match="PredictTextSentiment"):
        @app.model("text_sentiment")
        def g(x: int) -> int:
            return x


def test_a_name_colliding_with_a_version_rpc_is_refused():
    registry = ModelRegistry()
    registry.register(_spec("foo", 1))
    registry.register(_spec("foo", 2))
    with pytest.raises(RegistrationError, match="PredictFooV1"):
        registry.register(_spec("foo-v1", 1))


def test_the_default_version_found_follows_every_change_of_the_registry():
    """find_default is remembered (each Open Inference call without a version asks), so each
    change must forget it: a registration, a chosen default, an unregistration."""
    registry = ModelRegistry()
    assert registry.find_default("foo") is None
    registry.register(_spec("foo", 1))
    assert registry.find_default("foo").version == "1"
    registry.register(_spec("foo", 2))
    assert registry.find_default("foo").version == "2"
    registry.set_default("foo", "1")
    assert registry.find_default("foo").version == "1"
    registry.unregister("foo", "1")
    assert registry.find_default("foo").version == "2"
    registry.unregister("foo", "2")
    assert registry.find_default("foo") is None
    copy = registry.copy()
    copy.register(_spec("foo", 3))
    assert copy.find_default("foo").version == "3" and registry.find_default("foo") is None


def _spec(name: str, version: int):
    def f(x: int) -> int:
        return x

    return model(name, version=version)(f).__blazerpc_model__


def test_unsupported_annotation_names_model_parameter_and_type():
    app = BlazeApp()
    message = r"model 'weird' version '1': parameter 'x' \(complex\) is not supported"
    with pytest.raises(RegistrationError, match=message):
        @app.model("weird")
        def weird(x: complex) -> int:
            return 0
    assert len(app.registry) == 0


def test_missing_annotations_are_refused():
    app = BlazeApp()
    with pytest.raises(RegistrationError, match="parameter 'x' has no type annotation"):
        @app.model("f")
        def f(x) -> int:  # type: ignore[no-untyped-def]
            return 0
    with pytest.raises(RegistrationError, match="return type is not annotated"):
        @app.model("g")
        def g(x: int):  # type: ignore[no-untyped-def]
            return 0


@pytest.mark.parametrize(
    ("annotation", "message"),
    [(list[list[int]], "no protobuf equivalent"), (int | str, "union"), (dict[float, int], "map keys"),
     (list[int] | None, "cannot be optional")],
)
def test_unrepresentable_containers_are_refused(annotation, message):
    app = BlazeApp()

    def f(x: int) -> int:
        return x

    f.__annotations__["x"] = annotation
    with pytest.raises(RegistrationError, match=message):
        app.model("f")(f)


def test_bad_tensor_annotations_are_refused():
    with pytest.raises(RegistrationError, match="not a numpy dtype"):
        TensorInput["nope", 3]
    with pytest.raises(RegistrationError, match="negative"):
        TensorInput[np.float32, -3]


@pytest.mark.parametrize(
    ("dims", "shape", "batch_named", "described"),
    [
        ((), None, False, "[...]"),
        (("batch", 512), (None, 512), True, "[batch, 512]"),
        ((None, -1, "height", 3), (None, None, None, 3), False, "[?, ?, ?, 3]"),
        ((4, "batch"), (4, None), False, "[4, ?]"),
    ],
)
def test_annotation_dims_parse_and_describe(dims, shape, batch_named, described):
    # The helpers framework plugins share with TensorInput/TensorOutput.
    assert parse_dims(dims) == (shape, batch_named)
    assert describe_dims(shape, batch_named) == described
    assert TensorInput[(np.float32, *dims)].describe() == f"tensor float32{described}"


@pytest.mark.parametrize(
    ("dims", "message"),
    [((-2,), "tensor dimension -2 is negative"), ((True,), "must be an int, a name or None"),
     ((2.5,), "must be an int, a name or None")],
)
def test_bad_annotation_dims_are_refused(dims, message):
    with pytest.raises(RegistrationError, match=message):
        parse_dims(dims)


def test_an_annotation_without_a_dtype_is_refused_with_an_example():
    assert split_annotation(np.float32, what="X", example="X[np.float32]") == (np.float32, ())
    with pytest.raises(RegistrationError, match=r"X needs a dtype, e.g. X\[np.float32\]"):
        split_annotation((), what="X", example="X[np.float32]")
