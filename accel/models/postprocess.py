"""SSD-VGG300 host postprocessing, exactly as COMPAT.md describes the seed's:

anchors per layer -> decode offsets (cx, cy, w, h) with prior scaling [0.1, 0.1, 0.2, 0.2]
-> softmax over 21 classes -> keep (anchor, class 1..20) with score > 0.5 -> clip boxes to
[0, 1] -> keep the 400 best -> greedy per-class NMS at IoU 0.45.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .ssd_layout import HEADS, NUM_CLASSES, head_names

IMAGE_SIZE = 300
ANCHOR_SIZES = ((21, 45), (45, 99), (99, 153), (153, 207), (207, 261), (261, 315))
ANCHOR_STEPS = (8, 16, 32, 64, 100, 300)
ASPECT_RATIOS = ((2, 0.5), (2, 0.5, 3, 1 / 3), (2, 0.5, 3, 1 / 3), (2, 0.5, 3, 1 / 3),
                 (2, 0.5), (2, 0.5))
PRIOR_SCALING = (0.1, 0.1, 0.2, 0.2)
SCORE_THRESHOLD = 0.5
TOP_K = 400
NMS_THRESHOLD = 0.45


@dataclass(frozen=True)
class Detection:
    """One box, coordinates relative to the image (0..1)."""

    class_id: int  # 1..20 (0 is the background)
    score: float
    ymin: float
    xmin: float
    ymax: float
    xmax: float


def ssd_anchors(layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cy, cx, h, w) of one layer's anchors, broadcastable to [H, W, anchors]."""
    size = HEADS[layer][1]
    step = ANCHOR_STEPS[layer]
    s0, s1 = ANCHOR_SIZES[layer]
    grid = (np.arange(size, dtype=np.float64) + 0.5) * step / IMAGE_SIZE
    cy, cx = grid[:, None, None], grid[None, :, None]
    heights = [s0, np.sqrt(s0 * s1)] + [s0 / np.sqrt(r) for r in ASPECT_RATIOS[layer]]
    widths = [s0, np.sqrt(s0 * s1)] + [s0 * np.sqrt(r) for r in ASPECT_RATIOS[layer]]
    h = np.array(heights, dtype=np.float64) / IMAGE_SIZE
    w = np.array(widths, dtype=np.float64) / IMAGE_SIZE
    return cy, cx, h, w


def _layer_arrays(outputs, batch: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(class logits, box offsets) per layer from a dict by name or a list in output order."""
    pairs = []
    for layer, (block, size, anchors) in enumerate(HEADS):
        names = head_names(block)
        if isinstance(outputs, Mapping):
            missing = [n for n in names if n not in outputs]
            if missing:
                raise KeyError(f"SSD outputs lack {missing}; got {sorted(outputs)[:12]}")
            logits, offsets = (np.asarray(outputs[n], dtype=np.float64) for n in names)
        elif isinstance(outputs, Sequence) and len(outputs) == 2 * len(HEADS):
            logits, offsets = (np.asarray(outputs[2 * layer + i], dtype=np.float64)
                               for i in range(2))
        else:
            raise TypeError("ssd_postprocess expects a dict of the 12 SSD outputs by name, "
                            "or a list of them in output order")
        for array, depth, name in ((logits, NUM_CLASSES, names[0]), (offsets, 4, names[1])):
            if array.ndim != 5 or array.shape[1:] != (size, size, anchors, depth):
                raise ValueError(f"SSD output {name!r} has shape {array.shape}, expected "
                                 f"[N, {size}, {size}, {anchors}, {depth}]")
        batch = pairs[0][0].shape[0] if pairs else logits.shape[0]
        if logits.shape[0] != offsets.shape[0] or logits.shape[0] != batch:
            raise ValueError("SSD outputs disagree on the batch size")
        pairs.append((logits, offsets))
    return pairs


def _decode(offsets: np.ndarray, layer: int) -> np.ndarray:
    """[N, H, W, A, 4] offsets -> [N, H*W*A, 4] boxes (ymin, xmin, ymax, xmax)."""
    cy_ref, cx_ref, h_ref, w_ref = ssd_anchors(layer)
    cx = offsets[..., 0] * w_ref * PRIOR_SCALING[0] + cx_ref
    cy = offsets[..., 1] * h_ref * PRIOR_SCALING[1] + cy_ref
    w = w_ref * np.exp(offsets[..., 2] * PRIOR_SCALING[2])
    h = h_ref * np.exp(offsets[..., 3] * PRIOR_SCALING[3])
    boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)
    return boxes.reshape(offsets.shape[0], -1, 4)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ymin = np.maximum(box[0], boxes[:, 0])
    xmin = np.maximum(box[1], boxes[:, 1])
    ymax = np.minimum(box[2], boxes[:, 2])
    xmax = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _nms(classes: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Greedy per-class NMS over boxes sorted by score; returns the kept indices in order."""
    keep = np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if not keep[i]:
            continue
        rest = np.arange(i + 1, len(boxes))
        rest = rest[keep[rest] & (classes[rest] == classes[i])]
        keep[rest[_iou(boxes[i], boxes[rest]) > NMS_THRESHOLD]] = False
    return np.flatnonzero(keep)


def ssd_postprocess(outputs) -> list[list[Detection]]:
    """Detections per image, best first, from the 12 raw SSD-VGG300 outputs (a dict keyed by
    the seed's names, as ``accel.models.output_names("ssd_vgg300")`` lists, or a list in
    that order)."""
    pairs = _layer_arrays(outputs)
    scores = np.concatenate([_softmax(l).reshape(l.shape[0], -1, NUM_CLASSES)
                             for l, _ in pairs], axis=1)
    boxes = np.concatenate([_decode(o, layer) for layer, (_, o) in enumerate(pairs)], axis=1)
    results = []
    for image in range(scores.shape[0]):
        anchor, cls = np.nonzero(scores[image, :, 1:] > SCORE_THRESHOLD)
        cls = cls + 1
        score = scores[image, anchor, cls]
        box = np.clip(boxes[image, anchor], 0.0, 1.0)
        order = np.argsort(-score, kind="stable")[:TOP_K]
        cls, score, box = cls[order], score[order], box[order]
        kept = _nms(cls, box)
        results.append([Detection(int(cls[k]), float(score[k]), *map(float, box[k]))
                        for k in kept])
    return results
