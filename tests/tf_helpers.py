"""TensorFlow models as the seed's users hold them, made in a CHILD process for the TensorFlow
tests: TensorFlow exports its own copy of LLVM's symbols to the whole process, and PoCL, which
JIT-compiles accel's kernels with LLVM, then crashes in it. So the test processes never import
TensorFlow (nor does accel: accel.compiler.tf converts in a child process too).

    result = run("tiny", directory=str(tmp_path), inputs=x)   # x: float32 NHWC batch
    result["paths"]["graph_def"], result["outputs"]["predictions"]  # file, TensorFlow's output

Every function saves its model(s) under ``directory`` and returns file paths, and
TensorFlow's outputs on ``inputs`` as arrays.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# (found, not imported: importing it here would bring it into the test process)
requires_tensorflow = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("tensorflow", "tf2onnx")),
    reason="needs the [tf] extra (tensorflow-cpu, tf2onnx)")


def run(function: str, *, inputs: np.ndarray | None = None, timeout: float = 600,
        **kwargs) -> dict:
    """Call ``function`` of this module in a child process; its arrays come back as numpy."""
    with tempfile.TemporaryDirectory(prefix="accel-tf-test-") as tmp:
        if inputs is not None:
            np.save(Path(tmp) / "inputs.npy", inputs)
        request = dict(function=function, kwargs=kwargs, tmp=tmp)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        done = subprocess.run([sys.executable, __file__, json.dumps(request)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"tf_helpers.{function} failed:\n{done.stderr[-3000:]}")
        result = json.loads(Path(tmp, "result.json").read_text())
        with np.load(Path(tmp) / "outputs.npz") as arrays:
            result["outputs"] = {k: arrays[k] for k in arrays.files}
    return result


# --- what the child runs (TensorFlow imported inside) --------------------------------------


def _keras():
    import keras
    return keras


def save_frozen_graph_def(model, path: Path, input_name: str = "Placeholder") -> str:
    """``model`` frozen (variables as constants) into a GraphDef .pb with a dynamic batch and
    the seed's input name; returns its output tensor's name."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name=input_name)
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    Path(path).write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return frozen.outputs[0].name


def _predict(model, x) -> list[np.ndarray]:
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def tiny_classifier(size: int = 32, name: str = "tiny"):
    """conv -> BN -> ReLU -> ZeroPadding2D -> MaxPool -> GAP -> Dense softmax: a Keras
    application's stem and head, small enough to convert in a second."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((size, size, 3), name="images")
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.ZeroPadding2D(1, name="pool_pad")(x)
    x = layers.MaxPool2D(3, strides=2, name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)
    rng = np.random.default_rng(1)  # BatchNorm statistics away from the identity
    model.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.2, 16),
                                       rng.normal(0, 0.2, 16), rng.uniform(0.5, 2, 16)])
    return model


def tiny(directory: str, x, size: int = 32, name: str = "tiny") -> tuple[dict, dict]:
    """The tiny classifier as .keras, .h5, SavedModel and frozen GraphDef (input
    Placeholder:0); TensorFlow's predictions and avg_pool features; the GraphDef's
    Placeholders and output tensor."""
    keras = _keras()
    import tensorflow as tf
    model = tiny_classifier(size, name)
    d = Path(directory)
    paths = {"keras": d / f"{name}.keras", "h5": d / f"{name}.h5",
             "saved_model": d / f"{name}_saved", "graph_def": d / f"{name}_frozen.pb"}
    model.save(paths["keras"])
    model.save(paths["h5"])
    model.export(str(paths["saved_model"]), verbose=False)
    frozen_output = save_frozen_graph_def(model, paths["graph_def"])
    graph_def = tf.compat.v1.GraphDef.FromString(paths["graph_def"].read_bytes())
    features = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    info = dict(paths={k: str(v) for k, v in paths.items()}, frozen_output=frozen_output,
                placeholders=[n.name for n in graph_def.node if n.op == "Placeholder"])
    return info, {"predictions": _predict(model, x)[0], "avg_pool": _predict(features, x)[0]}


def keras_app(directory: str, x, name: str, size: int) -> tuple[dict, dict]:
    """keras.applications.<name>(weights=None, seed 0) at size x size, saved as .keras."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
    path = Path(directory) / f"{name}.keras"
    model.save(path)
    return {"path": str(path)}, {"predictions": _predict(model, x)[0]}


def ssd_like(directory: str, x, size: int = 96) -> tuple[dict, dict]:
    """An SSD-VGG300-like detector, exported as a SavedModel; TensorFlow's outputs."""
    keras = _keras()
    import tensorflow as tf

    class L2Normalization(keras.layers.Layer):
        """SSD's conv4_3 normalisation as Keras SSD ports write it: l2_normalize over
        channels times a learned per-channel scale initialised to 20."""

        def build(self, input_shape):
            self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],),
                                         initializer=keras.initializers.Constant(20.0))

        def call(self, t):
            return tf.math.l2_normalize(t, axis=3) * self.gamma

    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((size, size, 3), name="images")
    h = inputs
    for block, channels in enumerate([16, 32, 64], start=1):
        for i in (1, 2):
            h = layers.Conv2D(channels, 3, padding="same", activation="relu",
                              name=f"conv{block}_{i}")(h)
        h = layers.MaxPool2D(2, name=f"pool{block}")(h)
    h = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv4_3")(h)
    outputs = []

    def head(feature, name, anchors):
        fh, fw = feature.shape[1], feature.shape[2]
        for kind, width in (("cls", 21), ("loc", 4)):
            y = layers.Conv2D(anchors * width, 3, padding="same", name=f"{name}_{kind}")(feature)
            outputs.append(layers.Reshape((fh, fw, anchors, width), name=f"{name}_{kind}_r")(y))

    head(L2Normalization(name="conv4_3_norm")(h), "block4", 4)
    h = layers.MaxPool2D(3, strides=1, padding="same", name="pool5")(h)
    h = layers.Conv2D(96, 3, dilation_rate=6, padding="same", activation="relu", name="fc6")(h)
    h = layers.Conv2D(96, 1, activation="relu", name="fc7")(h)
    head(h, "block7", 6)
    h = layers.Conv2D(32, 1, activation="relu", name="block8_1")(h)
    h = layers.ZeroPadding2D(1, name="block8_pad")(h)
    h = layers.Conv2D(64, 3, strides=2, activation="relu", name="block8_2")(h)
    head(h, "block8", 6)
    model = keras.Model(inputs, outputs, name="ssd_like")
    path = Path(directory) / "ssd_saved"
    model.export(str(path), verbose=False)  # a custom layer: the SavedModel needs no code
    # the SavedModel's outputs are output_0, output_1, ... in the model's order
    return {"path": str(path)}, {f"output_{i}": y for i, y in enumerate(_predict(model, x))}


def resnet50_round_trip(directory: str, x) -> tuple[dict, dict]:
    """A Keras ResNet-50 (224x224, weights=None, seed 0) as a SavedModel and a frozen GraphDef;
    TensorFlow's probabilities on ``x`` (the seed's preprocessing of the photos). Random
    weights give every photo about the same features, so the same top class for all, which
    would prove nothing: its classifier is set up as training on these photos would leave
    it, a nearest-centroid one (class 100 * i + 1 for photo i, the others random)."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None)
    head = model.get_layer("predictions")
    features = _predict(keras.Model(model.inputs, head.input), x)[0]
    centred = features - features.mean(axis=0)
    kernel, _ = head.get_weights()
    kernel = kernel * 0.1 / (np.linalg.norm(kernel, axis=0).mean() * centred.std())
    typical = np.linalg.norm(centred, axis=1).mean()
    for i, f in enumerate(centred):  # logit = 5 |f_j| cos(f_j, f_i) / typical |f|
        kernel[:, 100 * i + 1] = 5 * f / (np.linalg.norm(f) * typical)
    head.set_weights([kernel, -(features.mean(axis=0) @ kernel)])
    d = Path(directory)
    model.export(str(d / "saved"), verbose=False)
    save_frozen_graph_def(model, d / "frozen.pb")
    return {"saved_model": str(d / "saved"), "graph_def": str(d / "frozen.pb")}, \
        {"predictions": _predict(model, x)[0]}


def _child(request: dict) -> None:
    tmp = Path(request["tmp"])
    x = np.load(tmp / "inputs.npy") if (tmp / "inputs.npy").is_file() else None
    info, arrays = globals()[request["function"]](x=x, **request["kwargs"])
    np.savez(tmp / "outputs.npz", **arrays)
    (tmp / "result.json").write_text(json.dumps(info))


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
