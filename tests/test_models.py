"""accel.models: the five architectures (structure, names, weights, numerics under
onnxruntime) and SSD postprocessing."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import accel.models as models
from accel.models import postprocess as post
from _models_graphs import ort_session, run_ort

SLOW = {"resnet152", "vgg16"}
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in models.MODEL_NAMES]

_CACHE: dict[str, onnx.ModelProto] = {}


def built(name: str) -> onnx.ModelProto:
    if name not in _CACHE:
        _CACHE[name] = models.build(name)
    return _CACHE[name]


def image_like(name: str, seed: int = 0) -> np.ndarray:
    """A random input with the statistics of a mean-subtracted image."""
    return np.random.default_rng(seed).normal(0, 64, models.input_shape(name)).astype(np.float32)


def parameter_count(model: onnx.ModelProto) -> int:
    """Learned parameters, as torchvision counts them (running statistics are buffers)."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if not t.name.endswith(("running_mean", "running_var")) and t.data_type == 1
               and not t.name.endswith((".eps", ".shape")))


# --- structure ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PARAMS)
def test_model_is_valid_onnx_with_the_seeds_names(name):
    model = built(name)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["images"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert tuple(dims) == models.input_shape(name)
    assert [o.name for o in model.graph.output] == models.output_names(name)


@pytest.mark.parametrize("name, params", [
    # torchvision's parameter counts for the same architectures
    ("resnet50", 25_557_032),
    pytest.param("resnet152", 60_192_808, marks=pytest.mark.slow),
    ("densenet121", 7_978_856),
    pytest.param("vgg16", 138_357_544, marks=pytest.mark.slow),
])
def test_parameter_counts_match_the_reference_architectures(name, params):
    assert parameter_count(built(name)) == params


def test_layer_structure():
    ops = Counter(n.op_type for n in built("resnet50").graph.node)
    assert ops["Conv"] == 53 and ops["BatchNormalization"] == 53 and ops["Add"] == 16
    dense = Counter(n.op_type for n in built("densenet121").graph.node)
    assert dense["Conv"] == 120 and dense["AveragePool"] == 3  # 3 transitions
    # the stride of a downsampling bottleneck sits on its 3x3 conv
    convs = {n.name: n for n in built("resnet50").graph.node if n.op_type == "Conv"}
    strides = {a.name: list(a.ints) for a in convs["layer2.0.conv2"].attribute}
    assert strides["strides"] == [2, 2]
    strides = {a.name: list(a.ints) for a in convs["layer2.0.conv1"].attribute}
    assert strides["strides"] == [1, 1]


def test_ssd_structure():
    model = built("ssd_vgg300")
    nodes = {n.name: n for n in model.graph.node}
    fc6 = {a.name: list(a.ints) for a in nodes["fc6"].attribute}
    assert fc6["dilations"] == [6, 6] and fc6["pads"] == [6, 6, 6, 6]
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    assert weights["fc6.weight"] == (1024, 512, 3, 3)
    assert weights["fc7.weight"] == (1024, 1024, 1, 1)
    assert weights["conv4_3_norm.scale"] == (1, 512, 1, 1)
    assert {n.op_type for n in model.graph.node} >= {"ReduceL2", "Div", "Mul"}
    for block, anchors in (("block4", 4), ("block7", 6), ("block8", 6), ("block9", 6),
                           ("block10", 4), ("block11", 4)):
        assert weights[f"{block}_box.cls.weight"][0] == anchors * 21
        assert weights[f"{block}_box.loc.weight"][0] == anchors * 4


# --- numerics under onnxruntime -------------------------------------------------------------


@pytest.mark.parametrize("name", PARAMS)
def test_outputs_are_sane_under_onnxruntime(name):
    session = ort_session(built(name))
    outputs = [run_ort(session, image_like(name, seed)) for seed in (0, 1)]
    for out in outputs:
        for value in out.values():
            assert np.all(np.isfinite(value))
    first = outputs[0][models.output_names(name)[0]]
    if name == "ssd_vgg300":
        shapes = [outputs[0][n].shape for n in models.output_names(name)]
        assert shapes == [(1, 38, 38, 4, 21), (1, 38, 38, 4, 4), (1, 19, 19, 6, 21),
                          (1, 19, 19, 6, 4), (1, 10, 10, 6, 21), (1, 10, 10, 6, 4),
                          (1, 5, 5, 6, 21), (1, 5, 5, 6, 4), (1, 3, 3, 4, 21), (1, 3, 3, 4, 4),
                          (1, 1, 1, 4, 21), (1, 1, 1, 4, 4)]
        assert 0.5 < first.std() < 5  # class logits with a spread that gives some detections
        return
    assert first.shape == (1, 1000)
    if name == "vgg16":
        logits = first
    else:
        np.testing.assert_allclose(first.sum(), 1.0, rtol=1e-5)
        assert first.max() < 0.9, "softmax is (nearly) one-hot: activations exploded"
        logits = np.log(first)
    assert 0.5 < logits.std() < 10, logits.std()
    # the input matters: two random inputs give different outputs
    second = outputs[1][models.output_names(name)[0]]
    assert np.abs(first - second).max() > 1e-4 * np.abs(first).max()


# --- build options --------------------------------------------------------------------------


def test_weights_are_deterministic_per_seed():
    a, b = models.build("densenet121"), models.build("densenet121")
    c = models.build("densenet121", seed=1)
    arrays = lambda m: {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}  # noqa: E731
    wa, wb, wc = arrays(a), arrays(b), arrays(c)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not np.array_equal(wa["features.conv0.weight"], wc["features.conv0.weight"])
    bn = wa["features.norm0.running_var"]
    assert bn.std() > 0 and not np.allclose(bn, 1.0), "BatchNorm statistics are trivial"


def test_unknown_model_and_bad_options():
    with pytest.raises(ValueError, match="known models: resnet50"):
        models.build("resnet18")
    with pytest.raises(ValueError, match="seed"):
        models.build("resnet50", seed=-1)
    with pytest.raises(ValueError, match="batch"):
        models.build("resnet50", batch=0)
    with pytest.raises(ValueError, match="input_layout"):
        models.build("resnet50", input_layout="CHWN")


@pytest.mark.parametrize("name", ["densenet121", "ssd_vgg300"])
def test_batch_and_nhwc_input(name):
    """The same weights with batch 2 and an NHWC input (preprocess_array's layout) give the
    same numbers as batch 1 NCHW."""
    model = models.build(name, batch=2, input_layout="NHWC")
    onnx.checker.check_model(model)
    x = np.stack([image_like(name, 0)[0], image_like(name, 1)[0]]).transpose(0, 2, 3, 1)
    assert x.shape == models.input_shape(name, batch=2, input_layout="NHWC")
    got = run_ort(model, np.ascontiguousarray(x))
    session = ort_session(built(name))
    for i in range(2):
        single = run_ort(session, image_like(name, i))
        for key, value in single.items():
            assert got[key].shape[0] == 2
            np.testing.assert_allclose(got[key][i:i + 1], value, rtol=1e-4,
                                       atol=1e-4 * np.abs(value).max())


def test_weights_from_npz_replace_initializers(tmp_path):
    rng = np.random.default_rng(5)
    fc = rng.normal(0, 0.01, (1000, 2048)).astype(np.float32)
    path = tmp_path / "w.npz"
    np.savez(path, **{"fc.weight": fc})
    model = models.build("resnet50", weights=path)
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(arrays["fc.weight"], fc)
    default = {t.name: numpy_helper.to_array(t) for t in built("resnet50").graph.initializer}
    np.testing.assert_array_equal(arrays["conv1.weight"], default["conv1.weight"])


def test_weights_from_onnx_file(tmp_path):
    path = tmp_path / "other.onnx"
    onnx.save(models.build("densenet121", seed=3), path)
    model = models.build("densenet121", weights=path)
    expected = models.build("densenet121", seed=3)
    for a, b in zip(model.graph.initializer, expected.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


def test_bad_weights_files(tmp_path):
    bad_name = tmp_path / "names.npz"
    np.savez(bad_name, **{"fc.wieght": np.zeros((1000, 2048), np.float32)})
    with pytest.raises(ValueError, match="fc.wieght"):
        models.build("resnet50", weights=bad_name)
    bad_shape = tmp_path / "shape.npz"
    np.savez(bad_shape, **{"fc.weight": np.zeros((10, 2048), np.float32)})
    with pytest.raises(ValueError, match=r"fc.weight.*\(10, 2048\).*\(1000, 2048\)"):
        models.build("resnet50", weights=bad_shape)
    nan = tmp_path / "nan.npz"
    np.savez(nan, **{"fc.bias": np.full(1000, np.nan, np.float32)})
    with pytest.raises(ValueError, match="NaN"):
        models.build("resnet50", weights=nan)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a readable"):
        models.build("resnet50", weights=garbage)
    with pytest.raises(FileNotFoundError):
        models.build("resnet50", weights=tmp_path / "missing.npz")


def test_center_head_makes_top1_depend_on_the_input():
    plain = ort_session(built("resnet50"))
    model = models.build("resnet50", center_head=True)
    centred = ort_session(model)
    rng = np.random.default_rng(7)
    images = []
    for cells in (7, 14, 28, 56, 7, 14):  # blocky noise images, new draws
        small = rng.normal(0, 64, (1, 3, cells, cells)).astype(np.float32)
        images.append(np.repeat(np.repeat(small, 224 // cells, 2), 224 // cells, 3))
    top = lambda s: {int(next(iter(run_ort(s, x).values())).argmax()) for x in images}  # noqa
    assert len(top(plain)) == 1  # the degenerate behaviour center_head is for
    assert len(top(centred)) >= 3
    probs = [next(iter(run_ort(centred, x).values())) for x in images]
    assert all(p.max() < 0.9 for p in probs)
    # the body is untouched
    a = {t.name: t for t in model.graph.initializer}
    b = {t.name: t for t in built("resnet50").graph.initializer}
    assert a["layer4.2.conv3.weight"] == b["layer4.2.conv3.weight"]
    assert a["fc.weight"] != b["fc.weight"]
    with pytest.raises(ValueError, match="center_head"):
        models.build("vgg16", center_head=True)


@pytest.mark.slow
def test_vgg16_builds_quickly():
    start = time.perf_counter()
    models.build("vgg16", seed=7)
    assert time.perf_counter() - start < 20  # a few seconds; generous on a shared 2-core box


# --- SSD postprocessing ---------------------------------------------------------------------


def background_outputs(batch: int = 1) -> dict[str, np.ndarray]:
    """Raw SSD outputs where every anchor is confidently background, offsets 0."""
    out = {}
    for block, size, anchors in post.HEADS:
        cls, loc = post.head_names(block)
        logits = np.zeros((batch, size, size, anchors, 21), np.float32)
        logits[..., 0] = 10.0
        out[cls] = logits
        out[loc] = np.zeros((batch, size, size, anchors, 4), np.float32)
    return out


def set_class(outputs, layer, i, j, a, cls, logit=10.0):
    name = post.head_names(post.HEADS[layer][0])[0]
    outputs[name][0, i, j, a, :] = 0.0
    outputs[name][0, i, j, a, cls] = logit


def test_anchors_follow_compat():
    counts = [np.broadcast_shapes(*(v.shape for v in post.ssd_anchors(layer)))
              for layer in range(6)]
    assert [int(np.prod(c)) for c in counts] == [5776, 2166, 600, 150, 36, 4]
    assert sum(int(np.prod(c)) for c in counts) == 8732
    cy, cx, h, w = post.ssd_anchors(0)
    assert cy[0, 0, 0] == pytest.approx(4 / 300) and cx[0, 1, 0] == pytest.approx(12 / 300)
    np.testing.assert_allclose(h, np.array([21, np.sqrt(21 * 45), 21 / np.sqrt(2),
                                            21 * np.sqrt(2)]) / 300)
    np.testing.assert_allclose(w, np.array([21, np.sqrt(21 * 45), 21 * np.sqrt(2),
                                            21 / np.sqrt(2)]) / 300)
    cy, cx, h, w = post.ssd_anchors(1)
    assert h.shape == (6,) and h[4] == pytest.approx(45 / np.sqrt(3) / 300)
    cy, cx, h, w = post.ssd_anchors(5)
    assert cy[0, 0, 0] == pytest.approx(0.5) and h[1] == pytest.approx(np.sqrt(261 * 315) / 300)


def test_decode_with_prior_scaling():
    out = background_outputs()
    set_class(out, 2, 4, 5, 3, cls=7)
    offsets = np.array([0.5, -1.0, 0.3, -0.2])
    out[post.head_names("block8")[1]][0, 4, 5, 3] = offsets
    (det,) = post.ssd_postprocess(out)[0]
    cy, cx, h, w = post.ssd_anchors(2)
    cy, cx, h, w = cy[4, 0, 0], cx[0, 5, 0], h[3], w[3]
    ex_cx = offsets[0] * w * 0.1 + cx
    ex_cy = offsets[1] * h * 0.1 + cy
    ex_w, ex_h = w * np.exp(offsets[2] * 0.2), h * np.exp(offsets[3] * 0.2)
    assert det.class_id == 7
    assert det.score == pytest.approx(np.exp(10) / (np.exp(10) + 20), rel=1e-6)
    assert (det.ymin, det.xmin, det.ymax, det.xmax) == pytest.approx(
        (ex_cy - ex_h / 2, ex_cx - ex_w / 2, ex_cy + ex_h / 2, ex_cx + ex_w / 2))


def test_threshold_clip_and_background():
    out = background_outputs()
    # score just below / above 0.5: logit l for one class, 0 for 20 others -> e^l / (e^l + 20)
    set_class(out, 1, 3, 3, 0, cls=2, logit=np.log(20 * 0.49 / 0.51))
    set_class(out, 1, 9, 9, 0, cls=3, logit=np.log(20 * 0.51 / 0.49))
    set_class(out, 0, 0, 0, 0, cls=4)  # corner anchor pushed outside the image: clipped
    out[post.head_names("block4")[1]][0, 0, 0, 0] = [-5, -5, 2, 2]
    set_class(out, 3, 2, 2, 0, cls=0)  # background only: never reported
    dets = post.ssd_postprocess(out)[0]
    assert sorted(d.class_id for d in dets) == [3, 4]
    corner = next(d for d in dets if d.class_id == 4)
    assert corner.ymin == 0.0 and corner.xmin == 0.0 and 0 < corner.ymax <= 1
    assert all(0 <= v <= 1 for d in dets for v in (d.ymin, d.xmin, d.ymax, d.xmax))


def test_nms_is_per_class():
    out = background_outputs()
    set_class(out, 0, 10, 10, 0, cls=5, logit=12)
    set_class(out, 0, 10, 10, 1, cls=5, logit=11)  # same centre, larger: IoU 0.47 -> dropped
    set_class(out, 0, 10, 10, 2, cls=6, logit=11)  # same place, other class: kept
    set_class(out, 0, 20, 20, 0, cls=5, logit=10)  # same class elsewhere: kept
    dets = post.ssd_postprocess(out)[0]
    assert [(d.class_id) for d in dets] == [5, 6, 5]
    assert dets[0].score > dets[1].score > dets[2].score


def test_top_400_before_nms():
    out = background_outputs()
    logits = []
    k = 0
    for i in range(0, 38, 2):  # every other cell: small anchors do not overlap there
        for j in range(0, 38, 2):
            for a in (0, 1):
                if k < 500:
                    logit = 5 + k * 0.01
                    set_class(out, 0, i, j, a, cls=1 + k % 20, logit=logit)
                    logits.append(logit)
                    k += 1
    dets = post.ssd_postprocess(out)[0]
    assert len(dets) == 400
    lowest = np.exp(sorted(logits)[-400])
    assert min(d.score for d in dets) == pytest.approx(lowest / (lowest + 20), rel=1e-6)


def test_postprocess_batch_list_and_bad_input():
    out = background_outputs(batch=2)
    name = post.head_names("block9")[0]
    out[name][1, 2, 2, 0, :] = 0
    out[name][1, 2, 2, 0, 9] = 10
    as_list = [out[n] for n in models.output_names("ssd_vgg300")]
    for given in (out, as_list):
        result = post.ssd_postprocess(given)
        assert len(result) == 2 and result[0] == [] and [d.class_id for d in result[1]] == [9]
    with pytest.raises(KeyError, match="block4"):
        post.ssd_postprocess({k: v for k, v in out.items() if "block4" not in k})
    bad = dict(out)
    bad[post.head_names("block4")[0]] = np.zeros((2, 37, 37, 4, 21), np.float32)
    with pytest.raises(ValueError, match=r"\[N, 38, 38, 4, 21\]"):
        post.ssd_postprocess(bad)
    with pytest.raises(TypeError):
        post.ssd_postprocess(np.zeros(3))


def test_postprocess_on_the_model_outputs():
    outputs = run_ort(built("ssd_vgg300"), image_like("ssd_vgg300"))
    (dets,) = post.ssd_postprocess(outputs)
    assert 0 < len(dets) <= 400
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.5
    boxes = np.array([(d.ymin, d.xmin, d.ymax, d.xmax) for d in dets])
    assert boxes.min() >= 0 and boxes.max() <= 1
    classes = np.array([d.class_id for d in dets])
    for c in np.unique(classes):  # no two kept boxes of one class overlap above 0.45
        same = boxes[classes == c]
        for i in range(len(same)):
            assert np.all(post._iou(same[i], same[i + 1:]) <= 0.45)
