"""accel.Classifier / accel.Detector and the metadata that lets an artifact take images:
preprocessing, labels and task recorded by accel.models.build -> accel.compile -> model.json.

One zoo ResNet-50 compile (module fixture) and small hand-written models for the rest; the
zoo SSD-VGG300 compile is the one slow test."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import accel
import accel.models
from accel import preprocess as pp
from accel.backend.api import model_metadata
from accel.models.labels import imagenet_labels, voc_labels
from accel.models.ssd_layout import HEADS, NUM_CLASSES, head_names
from accel.vision import Classifier, Detections, Detector, draw_detections

PHOTOS_DIR = Path(accel.__file__).resolve().parent / "data" / "photos"


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    files = sorted(PHOTOS_DIR.glob("*.jpg"))
    assert len(files) >= 4, "accel/data/photos should hold the bundled photos"
    return [f.read_bytes() for f in files]


@pytest.fixture(scope="module")
def resnet(photos):
    """The zoo ResNet-50 under the seed's name, calibrated on the bundled photos."""
    model = accel.models.build("QuantizedResnet50", center_head=True)
    x = pp.to_model_input(pp.preprocess(photos), pp.IMAGENET)
    return accel.compile(model, calibration=[x[i:i + 1] for i in range(len(x))],
                         progress=False)


def _by_hand(compiled, images: list[bytes]) -> np.ndarray:
    x = pp.to_model_input(pp.preprocess(images, compiled.preprocessing),
                          compiled.preprocessing)
    output = compiled.outputs[0].name
    return np.concatenate([compiled.run(x[i:i + 1])[output] for i in range(len(x))])


# --- the zoo classifier ---------------------------------------------------------------------
def test_zoo_metadata_reaches_the_artifact(resnet):
    assert resnet.preprocessing == pp.IMAGENET
    assert resnet.labels == imagenet_labels()
    assert resnet.task == "classification"
    nhwc = accel.models.build("Densenet121", input_layout="NHWC")
    recorded = model_metadata(nhwc)
    assert recorded["preprocessing"].layout == "NHWC"
    assert recorded["labels"] == "imagenet" and recorded["task"] == "classification"
    ssd = model_metadata(accel.models.build("QuantizedSsdVgg"))
    assert ssd["preprocessing"] == pp.SSD300 and ssd["labels"] == "voc"
    assert ssd["task"] == "detection"


def test_classify_bytes_equals_the_model_on_preprocess_output(resnet, photos):
    classifier = Classifier(resnet)
    assert not classifier.applies_softmax  # the output is a Softmax already
    results = classifier.classify(photos, top=5)
    expected = _by_hand(resnet, photos)
    assert len(results) == len(photos)
    for predictions, row in zip(results, expected):
        assert [p.index for p in predictions] == list(np.argsort(-row, kind="stable")[:5])
        assert [p.probability for p in predictions] == [float(row[p.index]) for p in predictions]
        assert [p.label for p in predictions] == [imagenet_labels()[p.index]
                                                  for p in predictions]
    # the centred head gives the photos different classes: top-1 depends on the image
    assert len({r[0].index for r in results}) > 1
    # one image as bytes, and preprocessed arrays, give the same answer
    assert classifier.classify(photos[0], top=5) == results[:1]
    assert classifier.classify(pp.preprocess(photos[:2]), top=5) == results[:2]


def test_save_load_classify_needs_nothing_else(resnet, photos, tmp_path):
    resnet.save(tmp_path / "r50")
    doc = json.loads((tmp_path / "r50" / "model.json").read_text())
    assert doc["preprocessing"] == pp.IMAGENET.to_dict()
    assert doc["labels"][281] == "tabby" and doc["task"] == "classification"
    loaded = Classifier(tmp_path / "r50")
    assert loaded.model.preprocessing == pp.IMAGENET
    assert loaded.classify(photos, top=3) == Classifier(resnet).classify(photos, top=3)


def test_old_artifact_loads_and_asks_for_a_spec(resnet, photos, tmp_path):
    resnet.save(tmp_path / "old")
    model_json = tmp_path / "old" / "model.json"
    doc = json.loads(model_json.read_text())
    for key in ("preprocessing", "labels", "task"):
        del doc[key]
    model_json.write_text(json.dumps(doc))
    old = accel.load(tmp_path / "old")
    assert (old.preprocessing, old.labels, old.task) == (None, None, None)
    classifier = Classifier(old)
    with pytest.raises(ValueError, match="records no preprocessing"):
        classifier.classify(photos[0])
    # preprocessed arrays still work (labels unknown: "class N")
    x = pp.to_model_input(pp.preprocess(photos[:1]), pp.IMAGENET)
    first = classifier.classify(x, top=1)[0][0]
    assert first.label == f"class {first.index}"
    # and so does giving what the artifact lacks
    given = Classifier(old, preprocessing=pp.IMAGENET, labels="imagenet")
    assert given.classify(photos, top=3) == Classifier(resnet).classify(photos, top=3)


def test_bad_images_raise_image_error_and_the_classifier_keeps_working(resnet, photos):
    classifier = Classifier(resnet)
    good = photos[1]
    for bad in (b"", b"not an image at all", good[:len(good) // 2], b"GIF89a" + bytes(40)):
        with pytest.raises(accel.ImageError):
            classifier.classify(bad)
    with pytest.raises(accel.ImageError, match="image 1"):
        classifier.classify([good, b"\xff\xd8\xff\xe0garbage"])
    assert classifier.classify(good, top=1) == Classifier(resnet).classify([good], top=1)


def test_classifier_argument_errors(resnet):
    with pytest.raises(ValueError, match="1000 classes"):
        Classifier(resnet, labels=["a", "b"])
    with pytest.raises(ValueError, match="no output"):
        Classifier(resnet, output="nope:0")
    with pytest.raises(ValueError, match="feeds inputs of shape"):
        Classifier(resnet, preprocessing=pp.SSD300)
    with pytest.raises(ValueError, match="top"):
        Classifier(resnet).classify(b"x", top=0)
    with pytest.raises(TypeError):
        Classifier(resnet).classify(12)


# --- small hand-written models --------------------------------------------------------------
def _conv(nodes, inits, rng, x, cin, cout, name, *, kernel=3, stride=1, pad=1, relu=True,
          bias=None):
    w = rng.normal(0, np.sqrt(2.0 / (cin * kernel * kernel)), (cout, cin, kernel, kernel))
    b = np.zeros(cout) if bias is None else bias
    inits += [numpy_helper.from_array(w.astype(np.float32), f"{name}.w"),
              numpy_helper.from_array(np.asarray(b, np.float32), f"{name}.b")]
    out = f"{name}:0"
    nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name,
                                  kernel_shape=[kernel, kernel], strides=[stride, stride],
                                  pads=[pad] * 4))
    if relu:
        nodes.append(helper.make_node("Relu", [out], [f"{name}/relu:0"], name=f"{name}/relu"))
        out = f"{name}/relu:0"
    return out


def _model(nodes, inits, input_shape, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def tiny_logits_classifier(batch: int, classes: int = 10) -> onnx.ModelProto:
    """conv -> global average pool -> Gemm: logits (no Softmax), like VGG-16's fc8 output."""
    rng = np.random.default_rng(3)
    nodes, inits = [], []
    x = _conv(nodes, inits, rng, "images", 3, 16, "stem", kernel=7, stride=4, pad=3)
    x = _conv(nodes, inits, rng, x, 16, 16, "conv2", stride=2)
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pool:0"], name="pool"),
              helper.make_node("Flatten", ["pool:0"], ["flat:0"], name="flat"),
              helper.make_node("Gemm", ["flat:0", "fc.w", "fc.b"], ["logits:0"], name="fc",
                               transB=1)]
    inits += [numpy_helper.from_array(rng.normal(0, 0.5, (classes, 16)).astype(np.float32),
                                      "fc.w"),
              numpy_helper.from_array(rng.normal(0, 0.1, classes).astype(np.float32), "fc.b")]
    return _model(nodes, inits, [batch, 3, 224, 224], [("logits:0", [batch, classes])])


def tiny_ssd() -> onnx.ModelProto:
    """SSD-VGG300's six heads and output names on a few small convs (compiles in seconds).
    Biases favour one class per anchor so that detections pass the 0.5 threshold."""
    rng = np.random.default_rng(4)
    nodes, inits, outputs = [], [], []
    x = _conv(nodes, inits, rng, "images", 3, 8, "stem", stride=8)  # 300 -> 38
    for i, (block, size, anchors) in enumerate(HEADS):
        if i:  # 38 -> 19 -> 10 -> 5 -> 3, then 3 -> 1
            x = _conv(nodes, inits, rng, x, 8, 8, f"down{i}", stride=1 if size == 1 else 2,
                      pad=0 if size == 1 else 1)
        cls_bias = np.zeros((anchors, NUM_CLASSES))
        cls_bias[np.arange(anchors), 1 + (i * 3 + np.arange(anchors)) % 20] = 4.0
        for kind, depth, bias, name in (("cls", NUM_CLASSES, cls_bias.ravel(),
                                         head_names(block)[0]),
                                        ("loc", 4, None, head_names(block)[1])):
            y = _conv(nodes, inits, rng, x, 8, anchors * depth, f"{block}.{kind}", relu=False,
                      bias=bias)
            inits.append(numpy_helper.from_array(
                np.array([1, size, size, anchors, depth], np.int64), f"{block}.{kind}.shape"))
            nodes += [helper.make_node("Transpose", [y], [f"{block}.{kind}/t:0"],
                                       name=f"{block}.{kind}/t", perm=[0, 2, 3, 1]),
                      helper.make_node("Reshape", [f"{block}.{kind}/t:0", f"{block}.{kind}.shape"],
                                       [name], name=f"{block}.{kind}/reshape")]
            outputs.append((name, [1, size, size, anchors, depth]))
    return _model(nodes, inits, [1, 3, 300, 300], outputs)


def _calibration(photos, spec, batch=1):
    x = pp.to_model_input(pp.preprocess(photos, spec), spec)
    return [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)]


@pytest.fixture(scope="module")
def logits_model(photos):
    names = [f"thing{i}" for i in range(10)]
    return accel.compile(tiny_logits_classifier(batch=2),
                         calibration=_calibration(photos, pp.IMAGENET, 2),
                         preprocessing=pp.IMAGENET, labels=names, task="classification",
                         progress=False)


def test_logits_get_a_softmax_and_batches_run_in_chunks(logits_model, photos):
    classifier = Classifier(logits_model)
    assert classifier.applies_softmax and classifier.batch == 2
    images = photos + photos[:1]  # 5 images: chunks of 2, 2 and a padded 1
    probabilities = classifier.probabilities(images)
    x = pp.to_model_input(pp.preprocess(images), pp.IMAGENET)
    x = np.concatenate([x, np.zeros_like(x[:1])])
    logits = np.concatenate([logits_model.run(x[i:i + 2])["logits:0"] for i in range(0, 6, 2)])
    e = np.exp(logits[:5] - logits[:5].max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, e / e.sum(axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    top = classifier.classify(images, top=20)
    assert all(len(t) == 10 for t in top)  # top is capped at the number of classes
    assert top[0][0].label == f"thing{top[0][0].index}"
    assert top[4] == top[0]  # the same photo, in another chunk position


def test_compile_metadata_arguments_are_checked_before_compiling(photos):
    model = tiny_logits_classifier(batch=1)
    with pytest.raises(ValueError, match="task"):
        accel.compile(model, calibration=_calibration(photos, pp.IMAGENET), task="segmentation")
    with pytest.raises(ValueError, match="unknown label set"):
        accel.compile(model, calibration=_calibration(photos, pp.IMAGENET), labels="coco")
    with pytest.raises(ValueError, match="feeds inputs of shape"):
        accel.compile(model, calibration=_calibration(photos, pp.IMAGENET),
                      preprocessing=pp.SSD300)
    bad = tiny_logits_classifier(batch=1)
    helper.set_model_props(bad, {"accel.preprocessing": "{\"height\": -1}"})
    with pytest.raises(ValueError, match="accel.preprocessing"):
        accel.compile(bad, calibration=_calibration(photos, pp.IMAGENET))


@pytest.fixture(scope="module")
def small_detector_model(photos):
    return accel.compile(tiny_ssd(), calibration=_calibration(photos[:2], pp.SSD300),
                         preprocessing=pp.SSD300, labels="voc", task="detection",
                         progress=False)


def test_detector_equals_postprocessing_the_model_by_hand(small_detector_model, photos,
                                                         tmp_path):
    detector = Detector(small_detector_model)
    results = detector.detect(photos)
    assert len(results) == len(photos)
    x = pp.to_model_input(pp.preprocess(photos, pp.SSD300), pp.SSD300)
    for i, found in enumerate(results):
        assert isinstance(found, Detections)
        expected = accel.models.ssd_postprocess(small_detector_model.run(x[i:i + 1]))[0]
        assert len(expected) > 0 and len(found.boxes) == len(expected)
        np.testing.assert_array_equal(found.class_ids, [d.class_id for d in expected])
        np.testing.assert_allclose(found.scores, [d.score for d in expected], rtol=1e-6)
        np.testing.assert_allclose(found.boxes, [[d.ymin, d.xmin, d.ymax, d.xmax]
                                                 for d in expected], rtol=1e-6, atol=1e-7)
        assert found.class_names == [voc_labels()[k - 1] for k in found.class_ids]
        assert np.all(found.scores > 0.5) and np.all(np.diff(found.scores) <= 0)
        assert np.all((found.boxes >= 0) & (found.boxes <= 1))
    items = results[0].items()
    assert items[0].class_name == results[0].class_names[0]
    path = draw_detections(photos[0], results[0], tmp_path / "boxes.png")
    drawn = Image.open(path)
    original = Image.open(io.BytesIO(photos[0]))
    assert drawn.size == original.size
    assert not np.array_equal(np.asarray(drawn.convert("RGB")), pp.decode(photos[0]))


def test_detector_refuses_a_classifier(logits_model):
    with pytest.raises(ValueError, match="not an SSD-VGG300"):
        Detector(logits_model)


@pytest.mark.slow
def test_zoo_ssd_detector(photos, tmp_path):
    """The zoo SSD-VGG300 (the seed's name) compiled, saved and loaded: the Detector needs
    nothing else, and its boxes are ssd_postprocess of the model's outputs."""
    model = accel.models.build("QuantizedSsdVgg")
    compiled = accel.compile(model, calibration=_calibration(photos[:2], pp.SSD300),
                             progress=False)
    assert compiled.task == "detection" and compiled.labels == voc_labels()
    compiled.save(tmp_path / "ssd")
    detector = Detector(tmp_path / "ssd")
    found = detector.detect(photos[:2])
    x = pp.to_model_input(pp.preprocess(photos[:2], pp.SSD300), pp.SSD300)
    for i in range(2):
        expected = accel.models.ssd_postprocess(compiled.run(x[i:i + 1]))[0]
        np.testing.assert_array_equal(found[i].class_ids, [d.class_id for d in expected])
        np.testing.assert_allclose(found[i].scores, [d.score for d in expected], rtol=1e-6)


def test_label_sets():
    names = imagenet_labels()
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet tissue"
    assert names[281] == "tabby" and names[285] == "Egyptian cat"  # ILSVRC-2012 order
    assert voc_labels()[7 - 1] == "car" and len(voc_labels()) == 20
    assert accel.models.label_set("voc") == voc_labels()
    assert accel.models.label_set('["a", "b"]') == ["a", "b"]
    assert accel.models.label_set(("x",)) == ["x"]
    for bad in ("coco", "[1, 2]", "[", [], [1], 3):
        with pytest.raises(ValueError):
            accel.models.label_set(bad)


def test_seed_model_names_are_zoo_names():
    assert accel.models.canonical_name("QuantizedResnet152") == "resnet152"
    assert accel.models.input_shape("QuantizedSsdVgg", input_layout="NHWC") == (1, 300, 300, 3)
    assert accel.models.output_names("QuantizedVgg16") == ["classifier/vgg_16/fc8/squeezed:0"]
    assert accel.models.output_names("Densenet121") == \
        ["classifier/densenet121/predictions/Softmax:0"]
    with pytest.raises(ValueError, match="QuantizedResnet50"):
        accel.models.build("QuantizedResnet18")
