"""Tiny TensorFlow models built at test time, and the SavedModel directories ``blazerpc serve`` takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf


def dense(seed: int = 0) -> Any:
    """A Keras model 8 → 16 → 3 with fixed weights."""
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Sequential(
        [tf.keras.Input((8,), name="features"), tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(3)]
    )


def export_keras(model: Any, path: Path) -> Path:
    """``model.export``: a SavedModel whose ``serving_default`` takes ``features`` and returns ``output_0``."""
    model.export(str(path), verbose=False)
    return path


class TwoHeads(tf.Module):
    """Two named inputs, two named outputs, dynamic first dimension everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = tf.Variable([[1.0, 2.0, 3.0]])

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="values"),
            tf.TensorSpec([None], tf.int64, name="ids"),
        ]
    )
    def serve(self, values: Any, ids: Any) -> dict[str, Any]:
        return {"scaled": values * self.scale, "next_id": ids + 1}


def save_two_heads(path: Path) -> Path:
    module = TwoHeads()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, "other": module.serve})
    return path


class FixedBatch(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([2, 3], tf.float32, name="x")])
    def serve(self, x: Any) -> dict[str, Any]:
        return {"y": x * 2}


def save_fixed(path: Path) -> Path:
    module = FixedBatch()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path
