"""The lowered model: what ``lower`` produces and a CompiledModel binds, runs and saves.

A ``Lowered`` is device-independent and serialisable: the host's float head and tail
(``HostNode``), the quantized device inputs and outputs (``TensorSpec``), the kernel steps
(``Step``: int8 weights and layer parameters) and where every device tensor lives
(``Placement``). ``to_document`` / ``from_document`` are the saved format (model.json's
structure plus the arrays of params.npz; accel.backend.compiled writes and checks the files).
Numpy only: a process that loads and runs a saved model imports this, not the compiler.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..ops.layout import padded_channels
from ..quantization import QParams


@dataclass
class Placement:
    """Where a device tensor lives: buffer ``root`` at channel ``offset``, ``stride`` padded
    channels per pixel; ``shape`` is its logical NHWC shape."""
    root: str
    offset: int
    stride: int
    shape: tuple[int, int, int, int]

    @property
    def contiguous(self) -> bool:
        return self.offset == 0 and self.stride == padded_channels(self.shape[3])

    @property
    def nbytes(self) -> int:
        n, h, w, _ = self.shape
        return n * h * w * self.stride


@dataclass
class Step:
    """One device op (one kernel launch, or an FPGA pipeline stage): ``op`` names its kind
    in accel.backend.steps.STEP_KINDS."""
    op: str
    name: str
    inputs: list[str]
    output: str
    attrs: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class HostNode:
    """Softmax / Reshape / Transpose / Identity run on the host in float."""
    op: str
    x: str
    output: str
    attrs: dict


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


HOST_OPS = {
    "softmax": lambda x, attrs: _softmax(x, attrs["axis"]),
    "reshape": lambda x, attrs: x.reshape(attrs["shape"]),
    "transpose": lambda x, attrs: np.ascontiguousarray(x.transpose(attrs["perm"])),
    "identity": lambda x, attrs: x.copy(),
}


def run_host_node(node: HostNode, env: dict[str, np.ndarray]) -> np.ndarray:
    if node.op not in HOST_OPS:
        raise ValueError(f"unknown host op {node.op!r}")
    return HOST_OPS[node.op](env[node.x], node.attrs)


@dataclass
class SpaceToDepth:
    """How the host rearranges a quantized input before upload: pad it with its zero point
    onto a ``height`` x ``width`` canvas (``pad_top`` rows and ``pad_left`` columns before
    it; the canvas may end before the input does), then fold every ``block`` x ``block``
    patch into channels, channel (dy * block + dx) * C + c (accel.backend.stem). With
    ``fold_width`` F > 1 (the FPGA binding, accel.backend.fpga_layout) each pixel then also
    carries its next F - 1 neighbours: pixel x, channel j * (block^2 C) + f = folded pixel
    x + j, channel f, over width / block - F + 1 columns (the stem conv's kernel columns
    become channels)."""
    block: int
    pad_top: int
    pad_left: int
    height: int  # multiples of block
    width: int
    fold_width: int = 1

    def __post_init__(self):
        if self.block < 2 or min(self.pad_top, self.pad_left) < 0 or min(
                self.height, self.width) <= 0 or self.height % self.block or \
                self.width % self.block or not 1 <= self.fold_width <= self.width // self.block:
            raise ValueError(f"bad space-to-depth {self}: block >= 2, pads >= 0, a "
                             "positive height and width that are multiples of block, and "
                             "1 <= fold_width <= width / block")


@dataclass
class TensorSpec:
    name: str
    shape: tuple[int, ...]      # logical (ONNX) shape
    qparams: QParams | None = None
    space_to_depth: SpaceToDepth | None = None  # device inputs only


@dataclass
class Lowered:
    name: str
    inputs: list[TensorSpec]            # the model's inputs (float32)
    outputs: list[TensorSpec]           # the model's outputs (float32)
    head: list[HostNode]
    device_inputs: list[TensorSpec]     # quantized on the host, uploaded
    steps: list[Step]
    device_outputs: list[TensorSpec]    # downloaded, dequantized
    tail: list[HostNode]
    placements: dict[str, Placement]


# --- the saved format (version 1) -----------------------------------------------------------


def _spec(t: TensorSpec) -> dict:
    q = None if t.qparams is None else [t.qparams.scale, t.qparams.zero_point]
    doc = {"name": t.name, "shape": list(t.shape), "qparams": q}
    if t.space_to_depth is not None:
        doc["space_to_depth"] = dataclasses.asdict(t.space_to_depth)
    return doc


def _from_spec(d: dict) -> TensorSpec:
    q = d["qparams"]
    s2d = d.get("space_to_depth")  # absent from models without a rewritten stem
    if s2d is not None:
        s2d = SpaceToDepth(**{k: int(v) for k, v in dict(s2d).items()})
    return TensorSpec(d["name"], tuple(d["shape"]),
                      None if q is None else QParams(float(q[0]), int(q[1])), s2d)


def to_document(lowered: Lowered) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON-able structure of ``lowered`` and its arrays by key (params.npz)."""
    arrays: dict[str, np.ndarray] = {}
    steps = []
    for i, step in enumerate(lowered.steps):
        keys = {}
        for key, value in step.arrays.items():
            keys[key] = f"s{i}_{key}"
            arrays[keys[key]] = np.asarray(value)
        steps.append({"op": step.op, "name": step.name, "inputs": step.inputs,
                      "output": step.output, "attrs": step.attrs, "arrays": keys})
    doc = {
        "name": lowered.name,
        "inputs": [_spec(t) for t in lowered.inputs],
        "outputs": [_spec(t) for t in lowered.outputs],
        "head": [dataclasses.asdict(n) for n in lowered.head],
        "device_inputs": [_spec(t) for t in lowered.device_inputs],
        "steps": steps,
        "device_outputs": [_spec(t) for t in lowered.device_outputs],
        "tail": [dataclasses.asdict(n) for n in lowered.tail],
        "placements": {k: dataclasses.asdict(p) for k, p in lowered.placements.items()},
    }
    return doc, arrays


def from_document(doc: dict, arrays: dict[str, np.ndarray]) -> Lowered:
    """The inverse of to_document (KeyError, TypeError, ValueError on a malformed one)."""
    return Lowered(
        name=doc["name"],
        inputs=[_from_spec(d) for d in doc["inputs"]],
        outputs=[_from_spec(d) for d in doc["outputs"]],
        head=[HostNode(**n) for n in doc["head"]],
        device_inputs=[_from_spec(d) for d in doc["device_inputs"]],
        steps=[Step(s["op"], s["name"], list(s["inputs"]), s["output"], s["attrs"],
                    {k: arrays[v] for k, v in s["arrays"].items()}) for s in doc["steps"]],
        device_outputs=[_from_spec(d) for d in doc["device_outputs"]],
        tail=[HostNode(**n) for n in doc["tail"]],
        placements={k: Placement(p["root"], p["offset"], p["stride"], tuple(p["shape"]))
                    for k, p in doc["placements"].items()})
