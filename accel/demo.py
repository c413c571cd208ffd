"""The README's main job (``accel demo``) runs the command line's own path:

    accel models build efficientnet_lite0 -o DIR/efficientnet_lite0.onnx
    accel compile DIR/efficientnet_lite0.onnx -o DIR/efficientnet_lite0.accel   (calibrated
                                                                  on the bundled photos)
    accel classify DIR/efficientnet_lite0.accel accel/data/photos

and then checks the result against onnxruntime fp32 on the same ONNX file (``compare``):
top-1 agreement on the photos, and batch-1 latency, the two taking turns on the same threads.

EfficientNet-Lite0 has its ImageNet-trained weights (the [pretrained] extra), so its labels
are real; without the extra the demo runs ResNet-50, whose zoo weights are deterministic
placeholders (nothing is downloaded): its labels are not meaningful, the agreement with
onnxruntime and the latency are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Comparison:
    device: str                   # where accel ran
    photos: list[tuple[str, int, int, bool]]  # (file, our top-1, onnxruntime's top-1, in our top-5)
    accel_ms: float               # batch-1 median latency
    onnxruntime_ms: float
    threads: int
    runs: int
    labels: list[str] | None = None  # the artifact's class names, if it records them

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else str(index)

    @property
    def same_top1(self) -> int:
        return sum(ours == theirs for _, ours, theirs, _ in self.photos)

    @property
    def in_top5(self) -> int:
        return sum(within for *_, within in self.photos)


def compare(onnx_path, artifact, photo_files, *, device=None, runs: int = 20,
            threads: int | None = None, progress: bool = True) -> Comparison:
    """Our compiled model against onnxruntime fp32 on its source ONNX file: top-1 on each
    photo (both fed by the artifact's own preprocessing), then batch-1 latency."""
    from . import bench
    from .preprocess import preprocess, to_model_input
    from .vision import Classifier

    threads = int(threads or os.cpu_count() or 1)
    classifier = Classifier(os.fspath(artifact), device=device)
    spec = classifier.spec
    session = bench.ort_session(os.fspath(onnx_path), threads)
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    rows, first = [], None
    for file in photo_files:
        nhwc = preprocess(Path(file).read_bytes(), spec)
        x = to_model_input(nhwc, spec)
        first = x if first is None else first
        ours = classifier.probabilities(nhwc)[0]
        theirs = session.run(None, {input_name: x})[output_names.index(classifier.output)][0]
        top5 = np.argsort(-ours, kind="stable")[:5]
        their_top1 = int(np.argmax(theirs))
        rows.append((Path(file).name, int(top5[0]), their_top1, their_top1 in top5))
    model = classifier.model
    latencies = bench.time_runners(
        {"accel": lambda: model.run(first),
         "onnxruntime": lambda: session.run(None, {input_name: first})},
        iterations=runs, warmup=3, progress=progress)
    return Comparison(device=model.device.short_name, photos=rows,
                      accel_ms=float(np.median(latencies["accel"])),
                      onnxruntime_ms=float(np.median(latencies["onnxruntime"])),
                      threads=threads, runs=runs, labels=classifier.labels)
