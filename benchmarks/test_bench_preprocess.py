"""Preprocessing time per 640x480 JPEG: accel.preprocess against TensorFlow doing the seed's
steps (decode_png, float32 cast, legacy bilinear resize of the shorter side to 256, centre
crop 224, mean subtraction) as a tf.function graph, in the same run; and the two halves
(decode; resize + crop + mean) apart. Both outputs are checked equal first.

    .venv/bin/python -m pytest benchmarks/test_bench_preprocess.py -s

TensorFlow may use every core (its default thread pools); accel.preprocess runs on one.
The ratio is taken on the best round (min) as well as the median: on a shared machine the
median moves with other people's load, the best round much less.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from accel import preprocess as pp

tf = pytest.importorskip("tensorflow")
skimage_data = pytest.importorskip("skimage.data")

TIMES: dict[str, tuple[float, float]] = {}  # (min, median) seconds


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.coffee()).resize((640, 480)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@tf.function
def _tf_decode(data):
    return tf.io.decode_png(data, channels=3)


@tf.function
def _tf_transform(image):
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    side = tf.constant(256.0)
    scale = tf.cond(height > width, lambda: side / width, lambda: side / height)
    new_height, new_width = tf.cast(height * scale, tf.int32), tf.cast(width * scale, tf.int32)
    image = tf.compat.v1.image.resize_bilinear(image[None], [new_height, new_width],
                                               align_corners=False)[0]
    image = tf.slice(image, [(new_height - 224) // 2, (new_width - 224) // 2, 0], [224, 224, 3])
    return image - tf.constant([123.68, 116.779, 103.939])


@tf.function
def _tf_seed(data):
    return _tf_transform(_tf_decode(data))


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print(f"\npreprocessing one 640x480 JPEG, min / median, {os.cpu_count()} cores:")
    for part in ("whole", "decode", "resize+crop+mean"):
        ours, theirs = TIMES.get(f"accel {part}"), TIMES.get(f"tensorflow {part}")
        if ours and theirs:
            print(f"  {part:17s} accel {ours[0] * 1e3:5.2f} / {ours[1] * 1e3:5.2f} ms   "
                  f"tensorflow {theirs[0] * 1e3:5.2f} / {theirs[1] * 1e3:5.2f} ms   "
                  f"accel / tensorflow = {ours[0] / theirs[0]:.2f} / {ours[1] / theirs[1]:.2f}")


def _record(benchmark, key):
    TIMES[key] = (benchmark.stats.stats.min, benchmark.stats.stats.median)


def test_outputs_agree(jpeg):
    np.testing.assert_array_equal(pp.preprocess(jpeg)[0], _tf_seed(jpeg).numpy())


def test_accel_whole(benchmark, jpeg):
    benchmark(pp.preprocess, jpeg)
    _record(benchmark, "accel whole")


def test_tensorflow_whole(benchmark, jpeg):
    data = tf.constant(jpeg)
    benchmark(lambda: _tf_seed(data).numpy())
    _record(benchmark, "tensorflow whole")


def test_accel_decode(benchmark, jpeg):
    benchmark(pp.decode, jpeg)
    _record(benchmark, "accel decode")


def test_tensorflow_decode(benchmark, jpeg):
    data = tf.constant(jpeg)
    benchmark(lambda: _tf_decode(data).numpy())
    _record(benchmark, "tensorflow decode")


def test_accel_transform(benchmark, jpeg):
    image = pp.decode(jpeg)
    benchmark(pp.transform, image, pp.IMAGENET)
    _record(benchmark, "accel resize+crop+mean")


def test_tensorflow_transform(benchmark, jpeg):
    image = tf.constant(pp.decode(jpeg))
    benchmark(lambda: _tf_transform(image).numpy())
    _record(benchmark, "tensorflow resize+crop+mean")
