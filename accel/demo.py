"""The main job of the README: build ResNet-50, compile it to int8 on the best device present,
classify photos, and time it against onnxruntime fp32 on the same model and threads.

The model has deterministic random weights (nothing is downloaded), so the class indices it
prints are not meaningful labels; the agreement with onnxruntime and the latency are.
"""

from __future__ import annotations

import os
import time

import numpy as np

MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float32)  # COMPAT.md's preprocessing


def photos(side: int) -> list[tuple[str, np.ndarray]]:
    """(name, NCHW float32) for scikit-image's bundled photos (centre-cropped, resized,
    mean-subtracted), or seeded noise images when scikit-image is not installed."""
    try:
        from skimage import data
        from skimage.transform import resize
    except ImportError:
        rng = np.random.default_rng(0)
        return [(f"noise{i}", rng.normal(0, 60, (1, 3, side, side)).astype(np.float32))
                for i in range(3)]
    out = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        image = getattr(data, name)().astype(np.float32)
        h, w = image.shape[:2]
        crop = min(h, w)
        top, left = (h - crop) // 2, (w - crop) // 2
        square = image[top:top + crop, left:left + crop]
        resized = resize(square, (side, side), order=1, preserve_range=True, anti_aliasing=False)
        out.append((name, (resized - MEAN_RGB).transpose(2, 0, 1)[None].astype(np.float32)))
    return out


def median_ms(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def classify_demo(model_name: str = "resnet50", device=None, repeat: int = 20) -> int:
    import onnxruntime as ort

    import accel
    from accel import models

    print(f"building {model_name} (deterministic weights) ...")
    # center_head: a classifier layer drawn so that different photos get different classes
    onnx_model = models.build(model_name, center_head=True)
    side = models.input_shape(model_name)[-1]
    images = photos(side)
    print(f"compiling to int8, calibrating on {len(images)} images ...")
    started = time.perf_counter()
    compiled = accel.compile(onnx_model, calibration=[x for _, x in images], device=device)
    device = compiled.device
    print(f"compiled in {time.perf_counter() - started:.1f} s for {device.platform} / {device.name}")

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(onnx_model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output = compiled.outputs[0].name
    agree = within = 0
    for name, x in images:
        ours = compiled.run(x)[output][0]
        theirs = session.run([output], {input_name: x})[0][0]
        top5, their_top1 = np.argsort(ours)[::-1][:5], int(np.argmax(theirs))
        agree += int(top5[0] == their_top1)
        within += int(their_top1 in top5)
        print(f"  {name:10s} top-5 classes {list(map(int, top5))}  p={ours[top5[0]]:.3f}   "
              f"onnxruntime fp32 top-1 {their_top1} (p={theirs[their_top1]:.3f})")
    x = images[0][1]
    ours_ms = median_ms(lambda: compiled.run(x), repeat)
    ort_ms = median_ms(lambda: session.run(None, {input_name: x}), repeat)
    print(f"onnxruntime fp32's top-1: our top-1 on {agree}/{len(images)}, "
          f"in our top-5 on {within}/{len(images)}")
    print(f"batch-1 latency (median of {repeat}): accel int8 on {compiled.device.short_name} "
          f"{ours_ms:.1f} ms, onnxruntime fp32 {ort_ms:.1f} ms "
          f"({os.cpu_count()} threads; ratio {ours_ms / ort_ms:.2f})")
    return 0
