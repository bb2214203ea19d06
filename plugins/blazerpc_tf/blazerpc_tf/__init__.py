"""blazerpc-tf: serve TensorFlow models.

Install it and ``tf.Tensor`` parameters and results work in any model::

    import tensorflow as tf
    from blazerpc_core import BlazeApp

    app = BlazeApp()
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])

    @app.model("classify")
    def classify(x: tf.Tensor) -> tf.Tensor:  # batch dimension first
        return model(x, training=False)

``TFTensor[tf.float32, "batch", 4]`` declares dtype and shape (and, with a first
dimension named ``batch``, turns batching on). ``blazerpc serve path/to/saved_model``
serves a SavedModel directory through its ``serving_default`` signature;
:func:`load_model` does the same from Python.
"""

from blazerpc_tf.saved_model import load_model
from blazerpc_tf.tensors import TFTensor, TFTensorSpec

__all__ = ["TFTensor", "TFTensorSpec", "load_model"]
