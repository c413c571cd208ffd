"""``accel.convert``: TensorFlow models (SavedModel, Keras, frozen GraphDef) to ONNX; the work
is accel.compiler.tf's (tf2onnx, the ``[tf]`` extra, imported only when a model is converted).

    proto = accel.convert.convert("saved_model_dir/", output="model.onnx")
"""

from .compiler.tf import (DEFAULT_OPSET, TensorNameError, TFModelError, convert,
                          converter_session, is_tf_model, save, tf_format)

__all__ = ["convert", "converter_session", "save", "tf_format", "is_tf_model", "TFModelError",
           "TensorNameError", "DEFAULT_OPSET"]
