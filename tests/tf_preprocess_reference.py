"""TensorFlow doing the seed's preprocessing, run as a CHILD process by tests/test_preprocess.py
(TensorFlow exports its own copy of LLVM's symbols to the whole process, and PoCL, which
JIT-compiles accel's kernels with LLVM, then crashes in it: see tests/tf_helpers.py).

    python tf_preprocess_reference.py request.npz result.npz

request.npz: ``image_<i>`` (uint8 bytes of encoded image i) and ``specs`` (a JSON list of
PreprocessSpec dicts). result.npz: ``decode_<i>`` (tf.io.decode_png(channels=3), as the seed
decodes every image) and ``preprocess_<j>_<i>`` (spec j's steps on image i).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def seed_preprocess(tf, data: bytes, spec: dict) -> np.ndarray:
    """The seed's preprocess_array for one image, in TensorFlow."""
    image = tf.cast(tf.io.decode_png(data, channels=3), tf.float32)
    if spec["preserve_aspect_ratio"]:
        shape = tf.shape(image)
        height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        side = tf.constant(float(spec["resize_side"]))
        scale = tf.cond(height > width, lambda: side / width, lambda: side / height)
        new_height = tf.cast(height * scale, tf.int32)
        new_width = tf.cast(width * scale, tf.int32)
        image = tf.compat.v1.image.resize_bilinear(image[None], [new_height, new_width],
                                                   align_corners=False)[0]
        crop = min(spec["height"], spec["resize_side"])
        image = tf.slice(image, [(new_height - crop) // 2, (new_width - crop) // 2, 0],
                         [crop, crop, 3])
    else:
        image = tf.compat.v1.image.resize_bilinear(image[None], [spec["height"], spec["width"]],
                                                   align_corners=False)[0]
    image = image - tf.constant(spec["mean"], tf.float32)
    if spec["channel_order"] == "BGR":
        image = image[..., ::-1]
    if spec["scaling_factor"] != 1.0:
        image = image * spec["scaling_factor"]
    return image.numpy()


def main(request_path: str, result_path: str) -> None:
    import tensorflow as tf
    with np.load(request_path) as request:
        specs = json.loads(str(request["specs"]))
        images = {int(key.split("_")[1]): request[key].tobytes()
                  for key in request.files if key.startswith("image_")}
    result = {}
    for i, data in images.items():
        result[f"decode_{i}"] = tf.io.decode_png(data, channels=3).numpy()
        for j, spec in enumerate(specs):
            result[f"preprocess_{j}_{i}"] = seed_preprocess(tf, data, spec)
    np.savez(result_path, **result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
