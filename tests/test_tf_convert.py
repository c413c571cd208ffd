"""TensorFlow models in: accel.compiler.tf.convert (tf2onnx), ``accel convert`` and
accel.compile(path_to_tf_model), on a small Keras model saved in every format a user holds
(.keras, .h5, SavedModel, frozen GraphDef with input Placeholder:0), against TensorFlow.

TensorFlow itself runs in child processes (tf_helpers.py says why); this process never
imports it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

import accel
from accel import cli
from accel.compiler import tf as tf_models
from test_compile import FASTEST, cosine, ort_outputs
from tf_helpers import requires_tensorflow, run

pytestmark = requires_tensorflow


def images(count: int, seed: int, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 50, (1, size, size, 3)).astype(np.float32) for _ in range(count)]


EVALUATION = np.concatenate(images(3, 5))


@pytest.fixture(scope="module", autouse=True)
def one_converter_process():
    """The conversions here share one child process (TensorFlow imported once)."""
    with tf_models.converter_session():
        yield


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny classifier in every format, and TensorFlow's outputs on EVALUATION."""
    return run("tiny", directory=str(tmp_path_factory.mktemp("tiny")), inputs=EVALUATION)


# (input name, output name) each format's ONNX model gets
NAMES = {"keras": ("images", "predictions"), "h5": ("images", "predictions"),
         "saved_model": ("images", "output_0"), "graph_def": ("Placeholder:0", "Identity:0")}


@pytest.mark.parametrize("kind", sorted(NAMES))
def test_every_format_converts_and_matches_tensorflow(saved, kind):
    proto = tf_models.convert(saved["paths"][kind])
    onnx.checker.check_model(proto)
    assert ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output]) == \
        tuple([n] for n in NAMES[kind])
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch.HasField("dim_value")  # the batch stays dynamic, as in TensorFlow
    np.testing.assert_allclose(ort_outputs(proto, EVALUATION)[NAMES[kind][1]],
                               saved["outputs"]["predictions"], rtol=1e-4, atol=1e-6)


def test_outputs_select_any_tensor(saved):
    """A Keras layer's output, a frozen graph's tensor by name (":0" optional), a signature's
    output by name: each is the ONNX model's output."""
    paths, features = saved["paths"], saved["outputs"]["avg_pool"]
    keras_proto = tf_models.convert(paths["keras"], outputs=["avg_pool"])
    assert [o.name for o in keras_proto.graph.output] == ["avg_pool"]
    np.testing.assert_allclose(ort_outputs(keras_proto, EVALUATION)["avg_pool"], features,
                               rtol=1e-4, atol=1e-5)
    graph_proto = tf_models.convert(paths["graph_def"], inputs=["Placeholder"],
                                    outputs=["tiny_1/avg_pool_1/Mean"])
    np.testing.assert_allclose(ort_outputs(graph_proto, EVALUATION)["tiny_1/avg_pool_1/Mean:0"],
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
    with pytest.raises(tf_models.TensorNameError) as info:
        tf_models.convert(saved["paths"][kind], **{option: [name]})
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


@pytest.mark.slow
def test_preprocessing_metadata_only_when_asked(tmp_path):
    """--preprocessing imagenet records the seed's preprocessing (NHWC), labels and task;
    accel.compile then carries them into the compiled model."""
    tiny224 = run("tiny", directory=str(tmp_path), size=224, name="tiny224",
                  inputs=images(1, 0, 224)[0])
    path = tiny224["paths"]["keras"]
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
    monkeypatch.setattr(tf_models, "LARGE_MODEL_BYTES", 1000)
    out = tmp_path / "model.onnx"
    proto = tf_models.convert(saved["paths"]["keras"], output=out)
    assert (tmp_path / "model.onnx.data").stat().st_size > 1000
    assert out.stat().st_size < 20_000  # the graph only
    assert any(t.raw_data for t in proto.graph.initializer)  # the caller keeps the weights
    expected = saved["outputs"]["predictions"]
    np.testing.assert_allclose(ort_outputs(onnx.load(out), EVALUATION)["predictions"], expected,
                               rtol=1e-4, atol=1e-6)
    compiled = accel.compile(out, calibration=images(4, 0), device=FASTEST, progress=False)
    for x, y in zip(EVALUATION, expected):
        assert cosine(compiled.run(x[None])["predictions"], y) >= 0.99


@pytest.mark.parametrize("kind", ["saved_model", "graph_def"])
def test_accel_compile_takes_a_tensorflow_model(saved, kind):
    """accel.compile(path) converts first; the dynamic batch becomes the calibration's."""
    with pytest.warns(UserWarning, match="dynamic batch"):
        compiled = accel.compile(saved["paths"][kind], calibration=images(4, 0), device=FASTEST,
                                 progress=False)
    name = NAMES[kind][1]
    cosines = [cosine(compiled.run(x[None])[name], y)
               for x, y in zip(EVALUATION, saved["outputs"]["predictions"])]
    assert min(cosines) >= 0.99, cosines  # measured 0.9996-0.9999


def test_cli_convert(saved, tmp_path, capsys):
    paths = saved["paths"]
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
    """Not on import, and not in this process even when converting (a child process does)."""
    code = ("import sys, accel, accel.cli, accel.convert, accel.compiler.tf as t\n"
            "assert t.tf_format('m.pb') == 'graph_def' and not t.is_tf_model('m.onnx')\n"
            "assert 'tensorflow' not in sys.modules and 'tf2onnx' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert "tensorflow" not in sys.modules and "tf2onnx" not in sys.modules


def test_the_frozen_graph_def_has_the_seed_input_name(saved):
    """The seed's users feed ``Placeholder:0``: what the frozen GraphDef here takes."""
    assert saved["placeholders"] == ["Placeholder"] and saved["frozen_output"] == "Identity:0"
