"""TensorFlow models as the seed's users hold them, for the TensorFlow tests: a Keras model
saved as a .keras file, a SavedModel directory and a frozen GraphDef whose input is
``Placeholder:0``."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def save_frozen_graph_def(model, path: Path, input_name: str = "Placeholder") -> str:
    """``model`` frozen (variables as constants) into a GraphDef .pb with a dynamic batch and
    the seed's input name; returns its output tensor's name."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name=input_name)
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    Path(path).write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return frozen.outputs[0].name


def save_all(model, directory: Path) -> dict[str, Path]:
    """``model`` as a .keras file, a SavedModel and a frozen GraphDef in ``directory``."""
    paths = {"keras": directory / f"{model.name}.keras",
             "saved_model": directory / f"{model.name}_saved",
             "graph_def": directory / f"{model.name}_frozen.pb"}
    model.save(paths["keras"])
    model.export(str(paths["saved_model"]), verbose=False)
    save_frozen_graph_def(model, paths["graph_def"])
    return paths


def predict(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))
