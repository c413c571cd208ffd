"""TensorFlow models in: accel.compiler.tf.convert (tf2onnx), ``accel convert`` and
accel.compile(path_to_tf_model), on a small Keras model saved in every format a user holds
(.keras, .h5, SavedModel, frozen GraphDef with input Placeholder:0), against TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import accel  # noqa: E402
from accel import cli  # noqa: E402
from accel.compiler import tf as tf_models  # noqa: E402
from test_compile import FASTEST, cosine, ort_outputs  # noqa: E402
from tf_helpers import predict, save_all, save_frozen_graph_def  # noqa: E402


def tiny_classifier(size: int = 32, name: str = "tiny") -> keras.Model:
    """conv -> BN -> ReLU -> ZeroPadding2D -> MaxPool -> GAP -> Dense softmax: the shape of a
    Keras application's stem and head, small enough to convert in a second."""
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
    # BatchNormalization's statistics away from the identity, as after training
    bn = model.get_layer("bn")
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.2, 16),
                    rng.normal(0, 0.2, 16), rng.uniform(0.5, 2, 16)])
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny classifier in every format: (model, {format: path})."""
    directory = tmp_path_factory.mktemp("tiny")
    model = tiny_classifier()
    paths = save_all(model, directory)
    paths["h5"] = directory / "tiny.h5"
    model.save(paths["h5"])
    return model, paths


def images(count: int, seed: int, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 50, (1, size, size, 3)).astype(np.float32) for _ in range(count)]


# (input name, output name) each format's ONNX model gets
NAMES = {"keras": ("images", "predictions"), "h5": ("images", "predictions"),
         "saved_model": ("images", "output_0"), "graph_def": ("Placeholder:0", "Identity:0")}


@pytest.mark.parametrize("kind", sorted(NAMES))
def test_every_format_converts_and_matches_tensorflow(saved, kind):
    model, paths = saved
    proto = tf_models.convert(paths[kind])
    onnx.checker.check_model(proto)
    assert ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output]) == \
        tuple([n] for n in NAMES[kind])
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch.HasField("dim_value")  # the batch stays dynamic, as in TensorFlow
    x = np.concatenate(images(2, 0))
    np.testing.assert_allclose(ort_outputs(proto, x)[NAMES[kind][1]], predict(model, x),
                               rtol=1e-4, atol=1e-6)


def test_outputs_select_any_tensor(saved):
    """A Keras layer's output, a frozen graph's tensor by name (":0" optional), a signature's
    output by name: each is the ONNX model's output."""
    model, paths = saved
    x = images(1, 1)[0]
    features = predict(keras.Model(model.inputs, model.get_layer("avg_pool").output), x)
    keras_proto = tf_models.convert(paths["keras"], outputs=["avg_pool"])
    assert [o.name for o in keras_proto.graph.output] == ["avg_pool"]
    np.testing.assert_allclose(ort_outputs(keras_proto, x)["avg_pool"], features, rtol=1e-4,
                               atol=1e-5)
    graph_proto = tf_models.convert(paths["graph_def"], inputs=["Placeholder"],
                                    outputs=["tiny_1/avg_pool_1/Mean"])
    np.testing.assert_allclose(ort_outputs(graph_proto, x)["tiny_1/avg_pool_1/Mean:0"],
                               features, rtol=1e-4, atol=1e-5)
    saved_proto = tf_models.convert(paths["saved_model"], outputs="output_0")
    assert [o.name for o in saved_proto.graph.output] == ["output_0"]


@pytest.mark.parametrize("kind, option, name, listed", [
    ("graph_def", "outputs", "logits:0", "['Identity:0']"),
    ("graph_def", "inputs", "images", "['Placeholder:0']"),
    ("saved_model", "outputs", "probabilities", "['output_0']"),
    ("keras", "outputs", "fc1000", "['predictions']"),
    ("keras", "inputs", "input_1", "['images']"),
])
def test_a_name_not_in_the_graph_is_a_one_line_error_listing_the_names(saved, kind, option,
                                                                        name, listed):
    _, paths = saved
    with pytest.raises(tf_models.TensorNameError) as info:
        tf_models.convert(paths[kind], **{option: [name]})
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert f"{option[:-1]} {name!r} is not in" in message and listed in message, message


def test_files_that_are_not_tensorflow_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        tf_models.convert(tmp_path / "missing.pb")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(tf_models.TFModelError, match="is not a TensorFlow model"):
        tf_models.convert(text)
    corrupt = tmp_path / "corrupt.pb"
    corrupt.write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(tf_models.TFModelError, match="not a TensorFlow GraphDef"):
        tf_models.convert(corrupt)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(tf_models.TFModelError, match="cannot load the Keras model"):
        tf_models.convert(broken)
    empty_saved = tmp_path / "saved"
    empty_saved.mkdir()
    (empty_saved / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(tf_models.TFModelError, match="cannot load the SavedModel"):
        tf_models.convert(empty_saved)


def test_preprocessing_metadata_only_when_asked(tmp_path):
    """--preprocessing imagenet records the seed's preprocessing (NHWC), labels and task;
    accel.compile then carries them into the compiled model."""
    model = tiny_classifier(224, "tiny224")
    path = tmp_path / "tiny224.keras"
    model.save(path)
    assert not tf_models.convert(path).metadata_props
    proto = tf_models.convert(path, preprocessing="imagenet")
    props = {p.key: p.value for p in proto.metadata_props}
    from accel.preprocess import IMAGENET
    expected = dict(IMAGENET.to_dict(), layout="NHWC")
    assert json.loads(props["accel.preprocessing"]) == expected
    assert props["accel.labels"] == "imagenet" and props["accel.task"] == "classification"
    with pytest.raises(ValueError, match="300x300 images, but input 'images' takes 224x224"):
        tf_models.convert(path, preprocessing="ssd300")
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        tf_models.convert(path, preprocessing="inception")
    compiled = accel.compile(proto, calibration=images(2, 0, 224), device=FASTEST,
                             progress=False)
    assert compiled.preprocessing.layout == "NHWC" and compiled.task == "classification"
    assert len(compiled.labels) == 1000


def test_large_models_are_written_with_external_data(saved, tmp_path, monkeypatch):
    """Above LARGE_MODEL_BYTES (1.8 GB; lowered here) tf2onnx's large_model path converts
    and the weights go to model.onnx.data, which onnx, onnxruntime and accel read back."""
    model, paths = saved
    monkeypatch.setattr(tf_models, "LARGE_MODEL_BYTES", 1000)
    out = tmp_path / "model.onnx"
    proto = tf_models.convert(paths["keras"], output=out)
    assert (tmp_path / "model.onnx.data").stat().st_size > 1000
    assert out.stat().st_size < 20_000  # the graph only
    assert any(t.raw_data for t in proto.graph.initializer)  # the caller keeps the weights
    x = images(1, 2)[0]
    np.testing.assert_allclose(ort_outputs(onnx.load(out), x)["predictions"], predict(model, x),
                               rtol=1e-4, atol=1e-6)
    compiled = accel.compile(out, calibration=images(4, 0), device=FASTEST, progress=False)
    assert cosine(compiled.run(x)["predictions"], predict(model, x)) >= 0.99


@pytest.mark.parametrize("kind", ["saved_model", "graph_def"])
def test_accel_compile_takes_a_tensorflow_model(saved, kind):
    """accel.compile(path) converts first; the dynamic batch becomes the calibration's."""
    model, paths = saved
    with pytest.warns(UserWarning, match="dynamic batch"):
        compiled = accel.compile(paths[kind], calibration=images(4, 0), device=FASTEST,
                                 progress=False)
    name = NAMES[kind][1]
    cosines = [cosine(compiled.run(x)[name], predict(model, x)) for x in images(3, 5)]
    assert min(cosines) >= 0.99, cosines  # measured 0.9996-0.9999


def test_cli_convert(saved, tmp_path, capsys):
    _, paths = saved
    out = tmp_path / "tiny.onnx"
    assert cli.main(["convert", str(paths["graph_def"]), "-o", str(out),
                     "--outputs", "Identity:0", "--opset", "15"]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "input Placeholder:0 [unk" in captured.err
    proto = onnx.load(out)
    assert proto.opset_import[0].version == 15
    assert cli.main(["convert", str(paths["keras"]), "-o", str(out), "--outputs",
                     "nope"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("accel: output 'nope' is not in") and "'predictions'" in error
    assert cli.main(["convert", str(tmp_path / "missing.pb"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_tensorflow_is_imported_only_for_a_tensorflow_model():
    code = ("import sys, accel, accel.cli, accel.convert, accel.compiler.tf as t\n"
            "assert t.tf_format('m.pb') == 'graph_def' and not t.is_tf_model('m.onnx')\n"
            "assert 'tensorflow' not in sys.modules and 'tf2onnx' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_frozen_graph_def_helper_names_the_seed_input(tmp_path):
    """The seed's users feed ``Placeholder:0``: what save_frozen_graph_def writes."""
    model = tiny_classifier()
    output = save_frozen_graph_def(model, tmp_path / "f.pb")
    graph_def = tf.compat.v1.GraphDef.FromString((tmp_path / "f.pb").read_bytes())
    assert [n.name for n in graph_def.node if n.op == "Placeholder"] == ["Placeholder"]
    assert output == "Identity:0"
