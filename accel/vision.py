"""Images in, answers out: a compiled model plus its preprocessing and labels.

    classifier = accel.Classifier("resnet50.accel")          # or a CompiledModel
    for top in classifier.classify([open("cat.jpg", "rb").read()], top=5):
        print(top[0].label, top[0].probability)
    detector = accel.Detector("ssd.accel")
    found = detector.detect(jpeg_bytes)[0]     # boxes, class_ids, class_names, scores

Both read the preprocessing (accel.preprocess.PreprocessSpec) and labels the artifact
records; either can be given instead (older artifacts record neither). The compiled batch
is fixed: larger batches run in chunks, a short last chunk is padded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .backend.compiled import CompiledModel
from .backend.compiled import load as _load
from .models.labels import label_set, voc_labels
from .models.postprocess import ssd_postprocess
from .models.ssd_layout import NUM_CLASSES, output_names as ssd_output_names
from .preprocess import ImageError, PreprocessSpec, preprocess, to_model_input


class Prediction(NamedTuple):
    index: int  # the output (softmax) position
    label: str
    probability: float


class Detection(NamedTuple):
    """One detected box, coordinates relative to the image (0..1)."""
    box: tuple[float, float, float, float]  # ymin, xmin, ymax, xmax
    class_id: int  # 1..20 for Pascal VOC (0 is the background)
    class_name: str
    score: float


class Detections(NamedTuple):
    """One image's detections, best first, as the seed returns them (rbboxes, rclasses,
    rscores)."""
    boxes: np.ndarray  # float32 [K, 4]: ymin, xmin, ymax, xmax, relative
    class_ids: np.ndarray  # int64 [K]
    class_names: list[str]
    scores: np.ndarray  # float32 [K]

    def items(self) -> list[Detection]:
        return [Detection(tuple(float(v) for v in box), int(c), name, float(s))
                for box, c, name, s in zip(self.boxes, self.class_ids, self.class_names,
                                           self.scores)]


def _as_model(model, device) -> CompiledModel:
    if isinstance(model, CompiledModel):
        if device is not None:
            raise ValueError("device applies when loading a saved model; this CompiledModel "
                             f"already runs on {model.device.short_name}")
        return model
    if isinstance(model, (str, os.PathLike)):
        return _load(model, device)
    raise TypeError(f"model must be a CompiledModel or the path of a saved one, got "
                    f"{type(model).__name__}")


class _ImageModel:
    """A compiled single-input image model: preprocessing, batching, padding."""

    def __init__(self, model, preprocessing, device):
        self.model = _as_model(model, device)
        if len(self.model.inputs) != 1 or len(self.model.inputs[0].shape) != 4:
            raise ValueError(f"model {self.model.name!r} has inputs "
                             f"{[(i.name, i.shape) for i in self.model.inputs]}: an image "
                             "model takes one 4-D input")
        if isinstance(preprocessing, dict):
            preprocessing = PreprocessSpec.from_dict(preprocessing)
        self.spec = preprocessing if preprocessing is not None else self.model.preprocessing
        self.batch = self.model.inputs[0].shape[0]  # fixed at compile time
        if self.spec is not None:
            expected = self.spec.input_shape(self.batch)
            if tuple(self.model.inputs[0].shape) != expected:
                raise ValueError(f"the preprocessing ({self.spec.height}x{self.spec.width}, "
                                 f"{self.spec.layout}) feeds inputs of shape {expected}; the "
                                 f"model's input has shape {self.model.inputs[0].shape}")

    def _inputs(self, images, first: int, total: int) -> np.ndarray:
        """float32 in the model's layout for ``images`` (numbers ``first``.. of ``total``)."""
        if isinstance(images, np.ndarray) and images.dtype.kind == "f":
            spec = self.spec
            if spec is None:  # preprocessed arrays need only the model's layout
                shape = self.model.inputs[0].shape
                if images.ndim == 4 and images.shape[1:] == tuple(shape[1:]):
                    return images.astype(np.float32, copy=False)
                raise ValueError(f"expected preprocessed images of shape [N, "
                                 f"{', '.join(map(str, shape[1:]))}], got {images.shape}")
            return to_model_input(images, spec)
        if self.spec is None:
            raise ValueError(f"model {self.model.name!r} records no preprocessing, so it cannot "
                             "take encoded images: pass preprocessing= (e.g. "
                             "accel.preprocess.IMAGENET) or preprocessed float32 arrays")
        rows = []
        for i, data in enumerate(images):
            try:
                rows.append(preprocess(data, self.spec))
            except ImageError as e:  # name the image within the whole call
                if total == 1:
                    raise
                raise ImageError(f"image {first + i}: {e}") from None
        return to_model_input(np.concatenate(rows), self.spec)

    def _run(self, images) -> dict[str, np.ndarray]:
        """The model's outputs for every image, run in chunks of the compiled batch."""
        if isinstance(images, (bytes, bytearray, memoryview)):
            images = [images]
        if isinstance(images, np.ndarray) and images.dtype.kind == "f":
            total = len(images)
        elif isinstance(images, (Sequence, np.ndarray)) and not isinstance(images, str):
            total = len(images)
        else:
            raise TypeError(f"expected encoded image bytes, a list of them or a float32 "
                            f"array, got {type(images).__name__}")
        if total == 0:
            raise ValueError("no images given")
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, total, self.batch):
            x = self._inputs(images[start:start + self.batch], start, total)  # chunk by chunk
            n = len(x)
            if n < self.batch:  # pad the last chunk to the compiled batch
                x = np.concatenate([x, np.zeros((self.batch - n,) + x.shape[1:], np.float32)])
            for name, value in self.model.run(x).items():
                chunks.setdefault(name, []).append(value[:n])
        return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _ends_in_softmax(model: CompiledModel, output: str) -> bool:
    """Whether ``output`` is a Softmax (possibly reshaped) rather than logits, read from the
    host ops that produce it."""
    producers = {node.output: node for node in model.lowered.tail}
    node = producers.get(output)
    while node is not None:
        if node.op == "softmax":
            return True
        if node.op not in ("reshape", "identity", "transpose"):
            return False
        node = producers.get(node.x)
    return False


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Classifier(_ImageModel):
    """A compiled classifier: ``classify(images, top=5)`` -> per image its ``top`` classes."""

    def __init__(self, model, *, labels=None, output: str | None = None, device=None,
                 preprocessing: PreprocessSpec | dict | None = None):
        super().__init__(model, preprocessing, device)
        names = [o.name for o in self.model.outputs]
        if output is None:
            if len(names) != 1:
                raise ValueError(f"model {self.model.name!r} has {len(names)} outputs: choose "
                                 f"one with output= ({', '.join(names)})")
            output = names[0]
        elif output not in names:
            raise ValueError(f"model {self.model.name!r} has no output {output!r}; its outputs: "
                             f"{', '.join(names)}")
        self.output = output
        shape = next(o.shape for o in self.model.outputs if o.name == output)
        self.num_classes = int(np.prod(shape[1:]))
        self.labels = label_set(labels) if labels is not None else self.model.labels
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels for {self.num_classes} classes (output "
                             f"{output!r} has shape {shape})")
        # VGG-16's seed output is fc8's logits: probabilities come from a softmax here
        self.applies_softmax = not _ends_in_softmax(self.model, output)

    def probabilities(self, images) -> np.ndarray:
        """float32 [N, classes]: class probabilities for encoded images or preprocessed
        float32 arrays."""
        out = self._run(images)[self.output]
        out = out.reshape(len(out), -1)
        return (_softmax(out) if self.applies_softmax else out).astype(np.float32)

    def classify(self, images, top: int = 5) -> list[list[Prediction]]:
        """Per image, its ``top`` most probable classes (best first). ``images``: encoded
        JPEG/PNG bytes, a list of them, or preprocessed float32 [N, H, W, 3] arrays."""
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise ValueError(f"top must be a positive int, got {top!r}")
        top = min(int(top), self.num_classes)
        probabilities = self.probabilities(images)
        results = []
        for row in probabilities:
            best = np.argsort(-row, kind="stable")[:top]
            results.append([Prediction(int(i), self.label(int(i)), float(row[i])) for i in best])
        return results

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels is not None else f"class {index}"


class Detector(_ImageModel):
    """A compiled SSD-VGG300: ``detect(images)`` -> per image its Detections, decoded as the
    seed decodes them (accel.models.ssd_postprocess)."""

    def __init__(self, model, *, labels=None, device=None,
                 preprocessing: PreprocessSpec | dict | None = None):
        super().__init__(model, preprocessing, device)
        missing = [n for n in ssd_output_names() if n not in {o.name for o in self.model.outputs}]
        if missing:
            raise ValueError(f"model {self.model.name!r} is not an SSD-VGG300: it lacks the "
                             f"outputs {missing[:2]}{' ...' if len(missing) > 2 else ''}")
        if labels is not None:
            self.labels = label_set(labels)
        else:
            self.labels = self.model.labels or voc_labels()
        if len(self.labels) not in (NUM_CLASSES - 1, NUM_CLASSES):
            raise ValueError(f"an SSD-VGG300 needs {NUM_CLASSES - 1} class names (or "
                             f"{NUM_CLASSES} with the background first), got {len(self.labels)}")

    def class_name(self, class_id: int) -> str:
        # 20 names: class id k (1..20) is labels[k - 1]; 21 names include the background
        return self.labels[class_id - (len(self.labels) == NUM_CLASSES - 1)]

    def detect(self, images) -> list[Detections]:
        """Per image its detections (score > 0.5 after per-class NMS, best first).
        ``images``: encoded JPEG/PNG bytes, a list of them, or preprocessed float32 arrays."""
        outputs = self._run(images)
        results = []
        for found in ssd_postprocess(outputs):
            results.append(Detections(
                boxes=np.array([[d.ymin, d.xmin, d.ymax, d.xmax] for d in found],
                               dtype=np.float32).reshape(-1, 4),
                class_ids=np.array([d.class_id for d in found], dtype=np.int64),
                class_names=[self.class_name(d.class_id) for d in found],
                scores=np.array([d.score for d in found], dtype=np.float32)))
        return results


def draw_detections(image_bytes, detections: Detections, path) -> str:
    """Write the image with its boxes and "name score" captions to ``path`` (the format
    from its suffix; Pillow). Returns the path."""
    from PIL import Image, ImageDraw

    from .preprocess import decode

    image = Image.fromarray(decode(image_bytes))
    draw = ImageDraw.Draw(image)
    width, height = image.size
    line = max(1, round(min(width, height) / 200))
    colours = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
               "#bfef45", "#fabed4", "#469990")
    for box, class_id, name, score in zip(detections.boxes, detections.class_ids,
                                          detections.class_names, detections.scores):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        colour = colours[int(class_id) % len(colours)]
        rect = (xmin * width, ymin * height, xmax * width, ymax * height)
        draw.rectangle(rect, outline=colour, width=line)
        caption = f"{name} {score:.2f}"
        left, top = rect[0], max(0.0, rect[1] - 12)
        text_box = draw.textbbox((left, top), caption)
        draw.rectangle(text_box, fill=colour)
        draw.text((left, top), caption, fill="white")
    path = os.fspath(path)
    image.save(path)
    return path


__all__ = ["Prediction", "Detection", "Detections", "Classifier", "Detector",
           "draw_detections"]
