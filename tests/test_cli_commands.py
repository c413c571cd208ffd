"""Every accel command and its failures, as a user meets them: exit codes (0 ok, 1 the work
failed, 2 bad usage or input), one line on stderr, no traceback.

Small hand-written ONNX models (a 32x32 classifier, the tiny SSD of test_vision.py) compile in
about a second; the bundled photos feed them through the models' own preprocessing.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import accel
from accel import images, models
from accel import preprocess as pp
from accel.cli import cli, main
from accel.vision import Detector
from chosen_devices import chosen

LABELS = ["apple", "bicycle", "cloud", "dog", "engine"]
PHOTOS = images.bundled_photos()


def tiny_classifier(path: Path, side: int = 32) -> Path:
    """conv 3x3/2 -> ReLU -> global average pool -> Gemm -> Softmax over 5 classes."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(0, 0.05, (8, 3, 3, 3)), "b": rng.normal(0, 0.1, 8),
              "fw": rng.normal(0, 0.1, (len(LABELS), 8)), "fb": np.zeros(len(LABELS))}
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["c"], pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                      [1, 3, side, side])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, len(LABELS)])],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([os.fspath(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected_code: int, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("accel: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- files --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def photo_dir(work) -> Path:
    folder = work / "photos"
    folder.mkdir()
    for photo in PHOTOS[:2]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    return folder


@pytest.fixture(scope="module")
def bad_images(work) -> dict[str, Path]:
    """A corrupt JPEG, a truncated PNG, and a JPEG whose header says 30000x30000."""
    folder = work / "bad"
    folder.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buffer, "PNG")
    png = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buffer, "JPEG")
    huge = bytearray(buffer.getvalue())
    sof = huge.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    huge[sof + 5:sof + 9] = struct.pack(">HH", 30000, 30000)
    files = {"corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
             "truncated.png": png[:len(png) // 2],
             "huge.jpg": bytes(huge),
             "cut.jpg": PHOTOS[0].read_bytes()[:4000]}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


BAD_IMAGE_MESSAGES = {"corrupt.jpg": "JPEG", "truncated.png": "truncated",
                      "huge.jpg": "larger than the limit", "cut.jpg": "Premature end"}


@pytest.fixture(scope="module")
def tiny_onnx(work) -> Path:
    return tiny_classifier(work / "tiny.onnx")


@pytest.fixture(scope="module")
def labels_file(work) -> Path:
    path = work / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_artifact(work, tiny_onnx, photo_dir, labels_file) -> Path:
    out = work / "tiny.accel"
    assert main(["compile", os.fspath(tiny_onnx), "-o", os.fspath(out), "--calibration",
                 os.fspath(photo_dir), "--labels", os.fspath(labels_file)]) == 0
    return out


# --- help and the zoo ---------------------------------------------------------------------------
def _command_paths(group, prefix=()):
    for name, command in group.commands.items():
        yield prefix + (name,)
        if hasattr(command, "commands"):
            yield from _command_paths(command, prefix + (name,))


def test_every_command_has_help(capsys):
    paths = list(_command_paths(cli))
    for expected in ("models", "compile", "classify", "detect", "run", "bench", "profile",
                     "demo", "devices"):
        assert (expected,) in paths
    assert ("models", "build") in paths
    for path in paths:
        code, out, err = run_cli(capsys, *path, "--help")
        assert code == 0, (path, err)
        assert out.startswith(f"Usage: accel {' '.join(path)}"), out


def test_models_lists_the_zoo_with_the_seed_names(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list(models.MODEL_NAMES + models.PRETRAINED_NAMES)
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet50"]["seed_names"] == ["QuantizedResnet50"]
    assert by_name["ssd_vgg300"]["task"] == "detection"
    assert by_name["ssd_vgg300"]["outputs"] == models.output_names("ssd_vgg300")
    assert by_name["vgg16"]["input_shape"] == [1, 3, 224, 224]
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "placeholder" in out
    for row in rows:
        assert row["name"] in out and all(seed in out for seed in row["seed_names"])
    assert by_name["efficientnet_lite0"]["weights"] == "pretrained"


@pytest.mark.slow
def test_models_build_writes_the_zoo_model(capsys, work):
    out_path = work / "ssd.onnx"
    code, out, _ = run_cli(capsys, "models", "build", "QuantizedSsdVgg", "-o", out_path,
                           "--batch", "2", "--input-layout", "NHWC", "--seed", "3")
    assert code == 0 and "wrote" in out
    written = onnx.load(out_path)
    expected = models.build("ssd_vgg300", batch=2, input_layout="NHWC", seed=3)
    dims = [d.dim_value for d in written.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 300, 300, 3]
    assert [o.name for o in written.graph.output] == models.output_names("ssd_vgg300")
    ours = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    for t in expected.graph.initializer:
        np.testing.assert_array_equal(ours[t.name], numpy_helper.to_array(t))


def test_models_build_refuses_an_unknown_name(capsys, work):
    code, _, err = run_cli(capsys, "models", "build", "resnet51", "-o", work / "x.onnx")
    assert_one_line_error(code, err, 2, "unknown model 'resnet51'", "QuantizedResnet50")
    assert not (work / "x.onnx").exists()


# --- compile ------------------------------------------------------------------------------------
def test_compile_records_preprocessing_labels_and_matches_onnxruntime(tiny_artifact, tiny_onnx,
                                                                      photo_dir):
    compiled = accel.load(tiny_artifact)
    spec = compiled.preprocessing
    assert (spec.height, spec.width, spec.layout) == (32, 32, "NCHW")
    assert spec.mean == pp.IMAGENET.mean and spec.preserve_aspect_ratio
    assert compiled.labels == LABELS
    session = ort.InferenceSession(os.fspath(tiny_onnx), providers=["CPUExecutionProvider"])
    for photo in images.image_files([photo_dir]):  # the calibration images: nothing clips
        x = pp.to_model_input(pp.preprocess(photo.read_bytes(), spec), spec)
        ours = compiled.run(x)["probs"][0]
        theirs = session.run(None, {"images": x})[0][0]
        assert int(np.argmax(ours)) == int(np.argmax(theirs)), photo.name
        np.testing.assert_allclose(ours, theirs, atol=0.01)


@pytest.mark.slow
def test_compile_takes_a_seed_name_and_reports_layer_errors(capsys, work):
    """The one zoo compile here: ResNet-50 by the seed's name, calibrated on one photo, with
    the per-layer error report."""
    calibration = work / "one-photo"
    calibration.mkdir()
    (calibration / PHOTOS[0].name).write_bytes(PHOTOS[0].read_bytes())
    out = work / "resnet50.accel"
    code, stdout, err = run_cli(capsys, "compile", "QuantizedResnet50", "-o", out,
                                "--calibration", calibration, "--report")
    assert code == 0, err
    compiled = accel.load(out)
    assert compiled.labels == accel.models.labels.imagenet_labels()
    assert compiled.task == "classification" and compiled.preprocessing == pp.IMAGENET
    assert [o.name for o in compiled.outputs] == models.output_names("resnet50")
    assert "relative error" in stdout and f"wrote {out}" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("│")]
    assert len(rows) >= compiled.num_launches - 5
    assert "calibrating: 1/1 inputs" in err


@pytest.mark.parametrize("case", ["missing file", "unknown name", "unknown device",
                                  "corrupt calibration image", "empty calibration folder",
                                  "missing labels file", "not an ONNX file",
                                  "compiled model given"])
def test_compile_errors(capsys, work, tiny_onnx, tiny_artifact, bad_images, case):
    out = work / "never.accel"
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    garbage = work / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 not a protobuf at all" * 10)
    bad_folder = bad_images["corrupt.jpg"].parent
    args, fragments = {
        "missing file": (["no/such/model.onnx"], ["no such file", "no/such/model.onnx"]),
        "unknown name": (["resnet51"], ["unknown model 'resnet51'", "resnet50"]),
        "unknown device": ([tiny_onnx, "--device", "nope-nope"],
                           ["no OpenCL device matches 'nope-nope'"]),
        "corrupt calibration image": ([tiny_onnx, "--calibration", bad_folder],
                                      [os.fspath(bad_folder)]),
        "empty calibration folder": ([tiny_onnx, "--calibration", empty], ["holds no"]),
        "missing labels file": ([tiny_onnx, "--labels", work / "nope.txt"], ["--labels"]),
        "not an ONNX file": ([garbage], ["garbage.onnx"]),
        "compiled model given": ([tiny_artifact], ["already a compiled model"]),
    }[case]
    code, _, err = run_cli(capsys, "compile", *args, "-o", out)
    assert_one_line_error(code, err, 2, *fragments)
    assert not out.exists()


def test_compile_bad_option_value_is_a_usage_error(capsys, work, tiny_onnx):
    code, _, err = run_cli(capsys, "compile", tiny_onnx, "-o", work / "x.accel",
                           "--observer", "median")
    assert code == 2 and "Error: Invalid value for '--observer'" in err


@pytest.mark.parametrize("options, observer, correction", [
    ((), "minmax", False),
    (("--bias-correction",), "minmax", "analytic"),
    (("--observer", "auto", "--bias-correction", "empirical"), "auto", "empirical"),
])
def test_compile_passes_the_calibration_choices(capsys, compile_calls, work, tiny_onnx, photo_dir,
                                                options, observer, correction):
    seen = compile_calls
    out = work / f"choices-{len(options)}.accel"
    code, _, err = run_cli(capsys, "compile", tiny_onnx, "-o", out, "--calibration", photo_dir,
                           *options)
    assert code == 0, err
    assert (seen["observer"], seen["bias_correction"]) == (observer, correction)
    assert out.exists()


# --- classify -----------------------------------------------------------------------------------
def test_classify_prints_the_model_s_top_classes(capsys, tiny_artifact, photo_dir):
    code, out, err = run_cli(capsys, "classify", tiny_artifact, photo_dir, "--top", "3",
                             "--json")
    assert code == 0, err
    results = json.loads(out)
    files = images.image_files([photo_dir])
    assert [r["image"] for r in results] == [os.fspath(f) for f in files]
    compiled = accel.load(tiny_artifact)
    spec = compiled.preprocessing
    for result, file in zip(results, files):
        x = pp.to_model_input(pp.preprocess(file.read_bytes(), spec), spec)
        probs = compiled.run(x)["probs"][0]
        best = np.argsort(-probs, kind="stable")[:3]
        assert [p["index"] for p in result["predictions"]] == best.tolist()
        assert [p["label"] for p in result["predictions"]] == [LABELS[i] for i in best]
        np.testing.assert_allclose([p["probability"] for p in result["predictions"]],
                                   probs[best], rtol=1e-6)
    code, out, _ = run_cli(capsys, "classify", tiny_artifact, files[0])
    assert code == 0
    assert out.splitlines()[0] == os.fspath(files[0])
    assert out.count("\n  ") == 5 and f"  1. {results[0]['predictions'][0]['probability']:.4f}" \
        in out


@pytest.mark.parametrize("bad", sorted(BAD_IMAGE_MESSAGES))
def test_classify_reports_a_bad_image_and_classifies_the_rest(capsys, tiny_artifact,
                                                              bad_images, bad):
    good = PHOTOS[0]
    code, out, err = run_cli(capsys, "classify", tiny_artifact, bad_images[bad], good)
    assert_one_line_error(code, err, 2, os.fspath(bad_images[bad]), BAD_IMAGE_MESSAGES[bad])
    assert os.fspath(good) in out and "  1. " in out  # the good image still ran


@pytest.mark.parametrize("case", ["missing image", "missing model", "onnx as model",
                                  "unknown device", "folder without images"])
def test_classify_errors(capsys, work, tiny_artifact, tiny_onnx, case):
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    photo = PHOTOS[0]
    args, fragments = {
        "missing image": ([tiny_artifact, work / "nope.jpg"], ["no such file", "nope.jpg"]),
        "missing model": ([work / "nope.accel", photo], ["no such compiled model", "nope.accel"]),
        "onnx as model": ([tiny_onnx, photo], ["compile it first"]),
        "unknown device": ([tiny_artifact, photo, "--device", "nope-nope"],
                           ["no OpenCL device matches 'nope-nope'"]),
        "folder without images": ([tiny_artifact, empty], ["holds no"]),
    }[case]
    code, out, err = run_cli(capsys, "classify", *args)
    assert_one_line_error(code, err, 2, *fragments)
    assert out == ""


@pytest.mark.slow
def test_a_huge_jpeg_header_is_refused_before_decoding(tiny_artifact, bad_images):
    """In a process of its own: exit 2, one line, no traceback, and the Python heap (numpy
    arrays included: tracemalloc sees them) never holds anything near the 2.7 GB that
    decoding 30000x30000 pixels would take. (Peak RSS is no measure here: it depends on
    what the OpenCL runtimes compile while the model loads.)"""
    script = ("import sys, tracemalloc\nfrom accel.cli import main\ntracemalloc.start()\n"
              "code = main(sys.argv[1:])\nprint(tracemalloc.get_traced_memory()[1] // 1024)\n"
              "sys.exit(code)\n")
    run = subprocess.run([sys.executable, "-c", script, "classify", os.fspath(tiny_artifact),
                          os.fspath(bad_images["huge.jpg"])], capture_output=True, text=True,
                         timeout=300)
    assert_one_line_error(run.returncode, run.stderr, 2, "30000x30000", "larger than the limit")
    assert int(run.stdout.split()[-1]) < 200_000  # kB, peak traced


@pytest.mark.slow
def test_errors_have_no_traceback_unless_debug(tiny_artifact, bad_images, work):
    argv = [sys.executable, "-m", "accel", "classify", os.fspath(work / "nope.accel"),
            os.fspath(PHOTOS[0])]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert_one_line_error(run.returncode, run.stderr, 2, "no such compiled model")
    debug = subprocess.run(argv[:3] + ["--debug"] + argv[3:], capture_output=True, text=True,
                           timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


# --- detect -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ssd_artifact(work, photo_dir) -> Path:
    from test_vision import tiny_ssd  # SSD-VGG300's heads and names on a few small convs
    source = work / "tiny_ssd.onnx"
    onnx.save(tiny_ssd(), source)
    out = work / "tiny_ssd.accel"
    assert main(["compile", os.fspath(source), "-o", os.fspath(out), "--calibration",
                 os.fspath(photo_dir), "--preprocessing", "ssd300", "--labels", "voc"]) == 0
    return out


def test_detect_prints_and_draws_the_detector_s_boxes(capsys, work, ssd_artifact):
    drawn = work / "drawn"
    code, out, err = run_cli(capsys, "detect", ssd_artifact, *PHOTOS[:2], "--json", "--draw",
                             drawn)
    assert code == 0, err
    results = json.loads(out)
    detector = Detector(ssd_artifact)
    for result, photo in zip(results, PHOTOS[:2]):
        expected = detector.detect(photo.read_bytes())[0]
        assert result["image"] == os.fspath(photo)
        assert [d["label"] for d in result["detections"]] == expected.class_names
        assert [d["class_id"] for d in result["detections"]] == expected.class_ids.tolist()
        np.testing.assert_allclose([d["box"] for d in result["detections"]],
                                   expected.boxes.reshape(-1, 4), atol=1e-6)
        with Image.open(result["drawn"]) as image, Image.open(photo) as original:
            assert image.size == original.size
    assert any(result["detections"] for result in results)  # the test sees boxes at all
    code, out, _ = run_cli(capsys, "detect", ssd_artifact, PHOTOS[0])
    assert code == 0 and out.startswith(f"{PHOTOS[0]}: ")
    assert "ymin" in out and results[0]["detections"][0]["label"] in out


def test_detect_errors(capsys, ssd_artifact, tiny_artifact, bad_images):
    code, out, err = run_cli(capsys, "detect", ssd_artifact, bad_images["truncated.png"],
                             PHOTOS[0])
    assert_one_line_error(code, err, 2, "truncated.png", "truncated")
    assert f"{PHOTOS[0]}: " in out
    code, _, err = run_cli(capsys, "detect", tiny_artifact, PHOTOS[0])
    assert_one_line_error(code, err, 2, "not an SSD-VGG300")


# --- run ----------------------------------------------------------------------------------------
def test_run_takes_npy_and_npz_and_writes_the_outputs(capsys, work, tiny_artifact):
    compiled = accel.load(tiny_artifact)
    x = np.random.default_rng(1).normal(0, 60, (1, 3, 32, 32)).astype(np.float32)
    np.save(work / "x.npy", x)
    np.savez(work / "x.npz", images=x)
    expected = compiled.run(x)["probs"]
    for source in ("x.npy", "x.npz"):
        target = work / f"out-{source}.npz"
        code, out, err = run_cli(capsys, "run", tiny_artifact, work / source, "-o", target)
        assert code == 0, err
        assert "probs" in out and "1x5" in out and f"wrote {target}" in out
        with np.load(target) as saved:
            assert saved.files == ["probs"]
            np.testing.assert_array_equal(saved["probs"], expected)


@pytest.mark.parametrize("case", ["missing input", "wrong key", "wrong shape", "not numpy",
                                  "missing model"])
def test_run_errors(capsys, work, tiny_artifact, case):
    np.savez(work / "wrong_key.npz", pictures=np.zeros((1, 3, 32, 32), np.float32))
    np.save(work / "wrong_shape.npy", np.zeros((1, 3, 30, 30), np.float32))
    (work / "junk.npy").write_bytes(b"definitely not numpy" * 5)
    model = tiny_artifact
    source, fragments = {
        "missing input": (work / "nope.npy", ["no such file"]),
        "wrong key": (work / "wrong_key.npz", ["pictures", "images"]),
        "wrong shape": (work / "wrong_shape.npy", ["(1, 3, 30, 30)", "(1, 3, 32, 32)"]),
        "not numpy": (work / "junk.npy", ["junk.npy", "not a readable"]),
        "missing model": (work / "wrong_shape.npy", ["no such compiled model"]),
    }[case]
    if case == "missing model":
        model = work / "nope.accel"
    code, out, err = run_cli(capsys, "run", model, source)
    assert_one_line_error(code, err, 2, *fragments)


# --- bench and profile --------------------------------------------------------------------------
def test_bench_times_accel_next_to_onnxruntime_fp32_and_int8(capsys, monkeypatch, work,
                                                              tiny_onnx):
    from accel.bench import THREAD_ENV
    for name in THREAD_ENV:  # --threads sets them for the process: undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    plot = work / "layers.png"
    code, out, err = run_cli(capsys, "bench", tiny_onnx, "--iterations", "4", "--warmup", "1",
                             "--threads", "1", "--json", "--per-layer", "--plot", plot)
    assert code == 0, err
    result = json.loads(out)
    assert result["threads"] == 1 and result["iterations"] == 4
    assert [t["runner"] for t in result["timings"]] == [
        "accel int8", "onnxruntime fp32", "onnxruntime int8 (QDQ)"]
    for t in result["timings"]:
        assert t["iterations"] == 4
        assert 0 < t["p50_ms"] <= t["p90_ms"] <= t["p99_ms"]
        assert t["throughput_ips"] == pytest.approx(1e3 / t["mean_ms"])
    assert result["timings"][1]["p50_vs_onnxruntime_fp32"] == 1.0
    compiled = accel.compile(tiny_onnx, calibration=[np.zeros((1, 3, 32, 32), np.float32)],
                             progress=False)
    assert len(result["layers"]) == compiled.num_launches
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_bench_table_and_a_compiled_model_without_its_source(capsys, tiny_artifact):
    code, out, err = run_cli(capsys, "bench", tiny_artifact, "-n", "3", "--warmup", "0")
    assert code == 0, err
    assert "accel int8" in out and "p99 ms" in out
    assert "onnxruntime runners skipped" in out and "onnxruntime fp32" not in out
    assert "timing: 3/3 runs" in err  # the progress bar, in its final state


def test_profile_prints_every_launch(capsys, tiny_artifact):
    code, out, err = run_cli(capsys, "profile", tiny_artifact, "--repeat", "2", "--json")
    assert code == 0, err
    layers = json.loads(out)
    assert len(layers) == accel.load(tiny_artifact).num_launches
    assert all(layer["ms"] > 0 for layer in layers)
    code, out, _ = run_cli(capsys, "profile", tiny_artifact, "--repeat", "1")
    assert code == 0 and layers[0]["name"] in out and f"in {len(layers)} launches" in out


@pytest.mark.parametrize("command", ["bench", "profile"])
def test_bench_and_profile_errors(capsys, tiny_onnx, command):
    code, _, err = run_cli(capsys, command, "resnet51")
    assert_one_line_error(code, err, 2, "unknown model 'resnet51'")
    code, _, err = run_cli(capsys, command, tiny_onnx, "--device", "nope-nope")
    assert_one_line_error(code, err, 2, "no OpenCL device matches 'nope-nope'")


# --- quiet output -------------------------------------------------------------------------------
WARNING_KERNEL = "__kernel void k(__global int* a) { int unused; a[0] = 2.5; }"
BROKEN_KERNEL = "__kernel void k(__global int* a) { a[0] = undeclared_name; }"
BUILD_SCRIPT = f"""
import accel
ctx = accel.Context("pocl")
ctx.build({WARNING_KERNEL!r}, cache=False)
try:
    ctx.build({BROKEN_KERNEL!r}, cache=False)
except accel.BuildError as e:
    print("LOG:", "undeclared_name" in e.log)
"""


@pytest.mark.skipif(not any(d.short_name == "pocl-cpu" for d in chosen()),
                    reason="PoCL, whose compiler prints the summary lines, is not a test device")
@pytest.mark.slow
@pytest.mark.parametrize("show", [False, True])
def test_the_opencl_compiler_s_chatter_stays_out_of_the_terminal(show):
    env = dict(os.environ, POCL_KERNEL_CACHE="0", ACCEL_CACHE_DIR="off")
    env.pop("ACCEL_BUILD_OUTPUT", None)
    if show:  # the control: what the runtime prints when left alone
        env["ACCEL_BUILD_OUTPUT"] = "show"
    run = subprocess.run([sys.executable, "-c", BUILD_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "LOG: True" in run.stdout  # the build log still reaches the error
    assert ("generated." in run.stderr) == show, run.stderr


def test_quiet_compiler_passes_other_output_through(capfd):
    from accel._compiler_output import quiet_compiler, strip_chatter
    assert strip_chatter(b"8 warnings generated.\nreal text\n1 error generated.\n") == \
        b"real text\n"
    with quiet_compiler():
        os.write(2, b"2 warnings generated.\nsomething else\n")
    assert capfd.readouterr().err == "something else\n"


def test_a_failing_progress_bar_is_erased(capsys):
    from accel.progress import track
    with pytest.raises(ZeroDivisionError):
        for i in track(range(3), "working:", unit="steps"):
            1 / (1 - i)
    assert capsys.readouterr().err == ""
    list(track(range(3), "working:", unit="steps"))
    assert "working: 3/3 steps" in capsys.readouterr().err
