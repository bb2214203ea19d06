"""ModelMetadata and ModelConfig answers: what clients and perf tools read before they send tensors.

ModelConfig carries what those tools act on: ``max_batch_size`` (0 for a model that is
not batched), inputs and outputs with their ``dims`` (without the batch dimension when
batched), ``dynamic_batching`` (the batcher's knobs, and priority levels 1 to 201 as the
``priority`` parameter maps them) and ``model_transaction_policy.decoupled`` for a
server-streaming model.
"""

from __future__ import annotations

from typing import Any

from blazerpc_core.defaults.open_inference.descriptors import KIND_CPU
from blazerpc_core.defaults.open_inference.tensor_form import TensorForm, TensorIO, config_dims
from blazerpc_core.runtime.batcher import Batcher
from blazerpc_core.runtime.dispatch import BatchConfig
from blazerpc_core.server.host import ModelEntry, ModelHost
from blazerpc_core.settings import ServeSettings

PLATFORM = "blazerpc"
#: ``priority`` parameter values: 1 is the highest level, PRIORITY_LEVELS the lowest, 0 the default.
PRIORITY_LEVELS = 201
DEFAULT_PRIORITY_LEVEL = 101


def _tensor(io: TensorIO) -> dict[str, Any]:
    return {"name": io.name, "datatype": io.datatype_name, "shape": list(io.shape)}


def model_metadata(host: ModelHost, entry: ModelEntry, form: TensorForm) -> dict[str, Any]:
    """``ModelMetadataResponse`` constructor arguments (shapes with -1 for the batch and any-size dimensions)."""
    name = entry.spec.name
    return {
        "name": name,
        "versions": [spec.version for spec in host.registry.versions(name)],
        "platform": PLATFORM,
        "inputs": [_tensor(io) for io in form.inputs],
        "outputs": [_tensor(io) for io in form.outputs],
    }


def batch_config(entry: ModelEntry, settings: ServeSettings) -> BatchConfig:
    """The knobs the model's batcher runs with (a third-party runner: the knobs as configured)."""
    runner = entry.runner
    if isinstance(runner, Batcher):
        return runner.config
    return BatchConfig.from_settings(entry.spec.batching.merged_over(settings.batching), entry.label)


def model_config(host: ModelHost, entry: ModelEntry, form: TensorForm, settings: ServeSettings) -> dict[str, Any]:
    """``ModelConfig`` constructor arguments."""
    spec = entry.spec
    batched = form.batched
    config: dict[str, Any] = {
        "name": spec.name,
        "platform": PLATFORM,
        "backend": PLATFORM,
        "max_batch_size": 0,
        "input": [
            {"name": io.name, "data_type": io.datatype.config if io.datatype else 0,
             "dims": config_dims(io, batched), "optional": io.optional}
            for io in form.inputs
        ],
        "output": [
            {"name": io.name, "data_type": io.datatype.config if io.datatype else 0, "dims": config_dims(io, batched)}
            for io in form.outputs
        ],
        "instance_group": [{"name": spec.name, "kind": KIND_CPU, "count": 1}],
        "model_transaction_policy": {"decoupled": form.decoupled},
    }
    versions = [s.version for s in host.registry.versions(spec.name)]
    if versions and all(v.isdigit() for v in versions):
        config["version_policy"] = {"specific": {"versions": [int(v) for v in versions]}}
    if batched:
        knobs = batch_config(entry, settings)
        config["max_batch_size"] = knobs.max_batch_size
        config["instance_group"][0]["count"] = knobs.max_concurrent_batches
        config["dynamic_batching"] = {
            "preferred_batch_size": [knobs.max_batch_size],
            "max_queue_delay_microseconds": int(knobs.batch_timeout * 1e6),
            "priority_levels": PRIORITY_LEVELS,
            "default_priority_level": DEFAULT_PRIORITY_LEVEL,
            "default_queue_policy": {"max_queue_size": knobs.max_queue_size},
        }
    return config
