"""accel.preprocess against TensorFlow doing the seed's steps (COMPAT.md "Preprocessing") on
scikit-image's photos re-encoded many ways, and its refusal of bad images."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import accel
from accel import preprocess as pp
from full_setup import missing_setup

skimage_data = pytest.importorskip("skimage.data")

MEAN = (123.68, 116.779, 103.939)


# --- test images ----------------------------------------------------------------------------
def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def png16(array: np.ndarray) -> bytes:
    """A 16-bit grey + alpha, RGB or RGBA PNG (Pillow writes 16-bit grey only)."""
    height, width, channels = array.shape
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 16, {2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def without_adobe_marker(jpeg: bytes) -> bytes:
    """The JPEG with its APP14 "Adobe" segment removed (TensorFlow then reads CMYK with its
    other formula)."""
    i = jpeg.index(b"\xff\xee")
    length = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
    assert jpeg[i + 4:i + 9] == b"Adobe"
    return jpeg[:i] + jpeg[i + 2 + length:]


def declared_size(jpeg: bytes, height: int, width: int) -> bytes:
    """The JPEG with its frame header (SOF0) saying height x width; the data stays small."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]


def images() -> dict[str, bytes]:
    """28 encodings of scikit-image's photos: JPEG qualities and chroma subsamplings,
    landscape and portrait, smaller than 256, sizes whose float32 resize truncates to 255,
    greyscale, progressive, CMYK (with and without the Adobe marker); PNG RGB, RGBA, grey,
    grey + alpha, palette with transparency, 1-bit, 16-bit grey, grey + alpha, RGB and RGBA."""
    astronaut = Image.fromarray(skimage_data.astronaut())
    cat = Image.fromarray(skimage_data.chelsea())
    coffee = Image.fromarray(skimage_data.coffee())
    rocket = Image.fromarray(skimage_data.rocket())
    camera = Image.fromarray(skimage_data.camera())
    rng = np.random.default_rng(0)
    alpha = np.asarray(cat.convert("RGBA")).copy()
    alpha[..., 3] = np.linspace(0, 255, alpha.shape[1]).astype(np.uint8)
    grey16 = (np.asarray(camera, dtype=np.uint16) * 257
              + (np.arange(camera.width, dtype=np.uint16) % 251))
    cmyk = _jpeg(cat.convert("CMYK"), quality=90)
    return {
        "jpeg q95 4:4:4": _jpeg(astronaut, quality=95, subsampling=0),
        "jpeg q75 4:2:0": _jpeg(astronaut, quality=75, subsampling=2),
        "jpeg q50 4:2:2": _jpeg(cat, quality=50, subsampling=1),
        "jpeg q30 landscape": _jpeg(coffee, quality=30),
        "jpeg 640x480": _jpeg(coffee.resize((640, 480)), quality=90),
        "jpeg portrait": _jpeg(rocket.transpose(Image.Transpose.ROTATE_90), quality=85),
        "jpeg portrait odd 301x457": _jpeg(coffee.resize((301, 457)), quality=80),
        "jpeg 282 wide (resizes to 255)": _jpeg(cat.resize((282, 400)), quality=88),
        "jpeg 108x107 (small, resizes to 255)": _jpeg(astronaut.resize((108, 107)), quality=90),
        "jpeg small 100x66": _jpeg(cat.resize((100, 66)), quality=90),
        "jpeg tiny 17x33": _jpeg(astronaut.resize((17, 33)), quality=90),
        "jpeg large 1200x1100": _jpeg(astronaut.resize((1200, 1100)), quality=92),
        "jpeg exactly 256": _jpeg(astronaut.resize((256, 256)), quality=90),
        "jpeg greyscale": _jpeg(camera, quality=85),
        "jpeg progressive": _jpeg(cat, quality=85, progressive=True),
        "jpeg progressive 4:4:4": _jpeg(coffee, quality=70, progressive=True, subsampling=0),
        "jpeg cmyk (Adobe)": cmyk,
        "jpeg cmyk (no Adobe marker)": without_adobe_marker(cmyk),
        "png rgb": _png(cat),
        "png rgba": _png(Image.fromarray(alpha, "RGBA")),
        "png grey": _png(camera.resize((300, 200))),
        "png grey + alpha": _png(camera.resize((200, 300)).convert("LA")),
        "png palette + transparency": _png(coffee.convert("P", palette=Image.Palette.ADAPTIVE,
                                                          colors=64), transparency=3),
        "png 1-bit": _png(camera.resize((260, 270)).convert("1")),
        "png 16-bit grey": _png(Image.fromarray(grey16)),
        "png 16-bit grey + alpha": png16(rng.integers(0, 65536, (90, 330, 2))),
        "png 16-bit rgb": png16(rng.integers(0, 65536, (120, 170, 3))),
        "png 16-bit rgba": png16(rng.integers(0, 65536, (300, 260, 4))),
    }


@pytest.fixture(scope="module")
def encoded() -> dict[str, bytes]:
    return images()


# --- TensorFlow doing the seed's steps (tests/tf_preprocess_reference.py, in a child process) --
SPECS = {
    "imagenet": pp.IMAGENET,
    "ssd300": pp.SSD300,
    "bgr-scaled": pp.PreprocessSpec(channel_order="BGR", scaling_factor=0.017, layout="NHWC"),
    "299-crop": pp.PreprocessSpec(height=299, width=299, resize_side=320,
                                  mean=(127.5, 127.5, 127.5)),
}


def damaged(jpeg: bytes) -> bytes:
    """A restart marker in the middle of the scan: libjpeg warns, and decodes anyway."""
    return jpeg[:len(jpeg) // 3] + b"\xff\xd0" + jpeg[len(jpeg) // 3:]


@pytest.fixture(scope="module")
def tf(encoded, tmp_path_factory):
    """TensorFlow's outputs: ``tf("decode", name)`` and ``tf("preprocess", spec_id, name)``."""
    if importlib.util.find_spec("tensorflow") is None:
        missing_setup("tensorflow (the [tf] extra) is not installed")
    inputs = {**encoded, "damaged": damaged(encoded["jpeg q50 4:2:2"])}
    names = list(inputs)
    directory = tmp_path_factory.mktemp("tf-reference")
    request, result = directory / "request.npz", directory / "result.npz"
    np.savez(request, specs=np.array(json.dumps([s.to_dict() for s in SPECS.values()])),
             **{f"image_{i}": np.frombuffer(inputs[n], np.uint8) for i, n in enumerate(names)})
    done = subprocess.run([sys.executable, str(Path(__file__).with_name(
        "tf_preprocess_reference.py")), str(request), str(result)], capture_output=True,
        text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(result) as arrays:
        values = {key: arrays[key] for key in arrays.files}
    spec_index = {spec_id: j for j, spec_id in enumerate(SPECS)}

    def lookup(kind: str, *key: str) -> np.ndarray:
        if kind == "decode":
            return values[f"decode_{names.index(key[0])}"]
        return values[f"preprocess_{spec_index[key[0]]}_{names.index(key[1])}"]
    return lookup


def test_decode_gives_tensorflows_pixels(tf, encoded):
    assert len(encoded) >= 20
    for name, data in encoded.items():
        expected = tf("decode", name)
        got = pp.decode(data)
        assert got.dtype == np.uint8 and got.shape == expected.shape, name
        # bit-exact, CMYK included: TensorFlow converts CMYK with integer formulas that
        # accel.preprocess repeats (with and without the Adobe marker)
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("spec_id", list(SPECS))
def test_preprocess_matches_tensorflow_doing_the_seeds_steps(tf, encoded, spec_id):
    spec = SPECS[spec_id]
    equal, worst = 0, 0.0
    for name, data in encoded.items():
        expected = tf("preprocess", spec_id, name)
        got = pp.preprocess(data, spec)
        assert got.shape == (1, spec.height, spec.width, 3) and got.dtype == np.float32
        difference = float(np.abs(got[0] - expected).max())
        assert difference <= 1e-3, f"{name}: max abs difference {difference}"
        equal += difference == 0.0
        worst = max(worst, difference)
    print(f"\n{spec}: {equal}/{len(encoded)} bit-equal, max abs difference {worst}")
    assert equal == len(encoded)  # measured: every image bit-equal


def test_a_batch_is_the_images_one_by_one(encoded):
    names = list(encoded)[:5]
    batch = pp.preprocess([encoded[n] for n in names])
    assert batch.shape == (5, 224, 224, 3)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(batch[i], pp.preprocess(encoded[name])[0])
    as_tensor = np.array([encoded[n] for n in names], dtype=object)  # like the seed's input
    np.testing.assert_array_equal(pp.preprocess(as_tensor), batch)


def test_resized_size_truncates_like_the_seed():
    assert pp.resized_size(400, 282, 256) == (363, 255)  # 256/282 * 282 < 256 in float32
    assert pp.resized_size(480, 640, 256) == (256, 341)
    assert pp.resized_size(256, 256, 256) == (256, 256)


def test_model_layouts():
    batch = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    nchw = pp.to_model_input(batch, pp.IMAGENET)
    assert nchw.shape == (2, 3, 224, 224) and nchw.flags.c_contiguous
    np.testing.assert_array_equal(nchw[1, 2], batch[1, :, :, 2])
    nhwc = pp.to_model_input(batch, pp.PreprocessSpec(layout="NHWC"))
    np.testing.assert_array_equal(nhwc, batch)
    with pytest.raises(ValueError, match="224, 224, 3"):
        pp.to_model_input(batch[:, :100], pp.IMAGENET)
    assert pp.IMAGENET.input_shape(4) == (4, 3, 224, 224)
    assert pp.SSD300.input_shape() == (1, 3, 300, 300)


def test_spec_round_trip_and_validation():
    spec = pp.PreprocessSpec(height=300, width=300, preserve_aspect_ratio=False,
                             channel_order="BGR", scaling_factor=2, layout="NHWC")
    assert pp.PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert pp.PreprocessSpec.from_dict(pp.IMAGENET.to_dict()) == pp.IMAGENET
    for bad in ({"height": 0}, {"channel_order": "GBR"}, {"layout": "CHW"},
                {"mean": (1, 2)}, {"mean": (1, 2, float("nan"))}, {"scaling_factor": "2"},
                {"height": 224, "width": 200},  # the seed's crop is square
                {"height": 300, "width": 300}):  # larger than the 256 resize
        with pytest.raises(ValueError):
            pp.PreprocessSpec(**bad)
    with pytest.raises(ValueError, match="unknown preprocessing key"):
        pp.PreprocessSpec.from_dict({"size": 224})


# --- bad images -----------------------------------------------------------------------------
def _one_line_image_error(data, **options) -> str:
    with pytest.raises(pp.ImageError) as info:
        pp.preprocess(data, **options)
    message = str(info.value)
    assert "\n" not in message and message
    assert isinstance(info.value, accel.AccelError) and isinstance(info.value, ValueError)
    return message


def test_bad_images_raise_one_line_image_errors(encoded):
    jpeg, png = encoded["jpeg q75 4:2:0"], encoded["png rgb"]
    assert "empty" in _one_line_image_error(b"")
    assert "not a JPEG or PNG" in _one_line_image_error(b"hello, world")
    assert "GIF" in _one_line_image_error(b"GIF89a" + bytes(64))
    assert "JPEG" in _one_line_image_error(jpeg[:len(jpeg) // 2])  # truncated
    assert "JPEG" in _one_line_image_error(jpeg[:-2])  # no end of image
    assert "JPEG" in _one_line_image_error(jpeg[:400])  # header only
    assert "JPEG" in _one_line_image_error(b"\xff\xd8\xff" + bytes(100))
    assert "PNG" in _one_line_image_error(png[:len(png) // 2])  # truncated
    assert "PNG" in _one_line_image_error(png[:20])
    assert "PNG" in _one_line_image_error(png[:40] + bytes(200) + png[240:])  # corrupt
    assert "image 1" in _one_line_image_error([jpeg, b"", jpeg])
    with pytest.raises(TypeError, match="path"):
        pp.preprocess("cat.jpg")
    # and the next good image is fine
    assert pp.preprocess(jpeg).shape == (1, 224, 224, 3)


def test_corrupt_entropy_data_decodes_like_tensorflow(tf, encoded):
    """libjpeg warns about a damaged scan and TensorFlow decodes it anyway: so do we."""
    np.testing.assert_array_equal(pp.decode(damaged(encoded["jpeg q50 4:2:2"])),
                                  tf("decode", "damaged"))


def test_a_huge_declared_size_is_refused_before_decoding(encoded):
    jpeg = declared_size(_jpeg(Image.new("RGB", (64, 64), "red"), quality=90), 30000, 30000)
    assert pp.image_size(jpeg) == (30000, 30000)
    tracemalloc.start()
    try:
        message = _one_line_image_error(jpeg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "30000x30000" in message and "limit" in message
    assert peak < 4 << 20  # a decode would have allocated 2.7 GB
    png = encoded["png rgb"]
    huge_png = png[:16] + struct.pack(">II", 40000, 40000) + png[24:]
    assert "40000x40000" in _one_line_image_error(huge_png)


def test_the_pixel_limit_is_configurable(encoded, monkeypatch):
    jpeg = encoded["jpeg 640x480"]  # 307,200 pixels
    assert "limit of 300000" in _one_line_image_error(jpeg, max_pixels=300_000)
    assert pp.preprocess(jpeg, max_pixels=307_200).shape == (1, 224, 224, 3)
    monkeypatch.setenv(pp.MAX_PIXELS_ENV, "1000")
    assert "limit of 1000 " in _one_line_image_error(jpeg)
    monkeypatch.setenv(pp.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=pp.MAX_PIXELS_ENV):
        pp.preprocess(jpeg)
    monkeypatch.delenv(pp.MAX_PIXELS_ENV)
    assert pp.max_pixels_limit() == pp.DEFAULT_MAX_PIXELS


def test_memory_stays_bounded_on_a_huge_declared_size():
    """In a fresh process: refusing a 30000x30000 JPEG leaves the peak resident memory
    where importing accel put it."""
    code = """
import io, resource, struct
from PIL import Image
from accel import preprocess as pp
buffer = io.BytesIO(); Image.new("RGB", (64, 64)).save(buffer, "JPEG")
jpeg = buffer.getvalue(); i = jpeg.index(b"\\xff\\xc0")
jpeg = jpeg[:i + 5] + struct.pack(">HH", 30000, 30000) + jpeg[i + 9:]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(20):
    try:
        pp.preprocess(jpeg)
    except pp.ImageError:
        pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    grown_kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                   text=True, check=True).stdout.strip())
    assert grown_kib < 20_000
