"""CompiledModel: a lowered model bound to one device as a single C++ Plan.

run() = host quantize (+ NCHW -> NHWC, space-to-depth for a rewritten stem conv, channel
padding) of the inputs, ONE plan.run (every launch recorded once, arguments bound once, GIL
released), host dequantize + Softmax / Reshape / Transpose. save() writes one directory:
model.json (structure, scales, layer parameters, and what turns images into inputs and
outputs into answers: preprocessing, labels, task; absent in older artifacts) and params.npz
(int8 weights, int32 biases, multipliers), no pickle; load() checks the format, version and
a SHA-256 of the arrays before trusting anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import AccelError
from ..fpga import presets as fpga_presets
from ..interop import is_device_array
from ..models.labels import label_set
from ..ops.layout import pad_channels
from ..preprocess import PreprocessSpec
from ..quantization import QParams, dequantize, quantize
from ..runtime import Context
from .binding import bind
from .lowered import Lowered, from_document, run_host_node, to_document
from .stem import apply_space_to_depth

FORMAT = "accel-compiled-model"
VERSION = 1
MODEL_FILE = "model.json"
PARAMS_FILE = "params.npz"
TASKS = ("classification", "detection")


class ModelLoadError(AccelError, ValueError):
    """A saved model is missing, truncated, corrupted or of another format version."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class LayerTime:
    name: str
    op: str
    ms: float


class CompiledModel:
    """An int8 model ready to run on one device."""

    def __init__(self, lowered: Lowered, device=None, *, fpga_pipelines: bool | None = None,
                 preprocessing=None, labels=None, task: str | None = None, fpga_design=None):
        # what turns images into inputs and outputs into answers (saved in model.json)
        self.preprocessing = preprocessing
        self.labels = labels
        self.task = task
        # an accel.Context as it is (e.g. Context.from_pyopencl: run_device's arrays live there)
        self._ctx = device if isinstance(device, Context) else Context(device)
        self._device_plan = None  # run_device's launches, without the Plan's host copies
        # fpga_design: the FPGA bitstream's knobs (accel.fpga.FpgaDesign or a name in
        # accel.fpga.presets; default the DEFAULT_CONFIG), saved with the model; the lowered
        # model as bound (re-strided for its VEC_SIZE) is kept
        self.fpga_design = fpga_presets.resolve(fpga_design)
        self._bound = bind(self._ctx, lowered, fpga_pipelines, self.fpga_design)
        self._lowered = self._bound.lowered
        self.layer_errors = None  # set by compile(..., report=True)
        self.source = None  # the ONNX model (proto or path) compile() was given; None if loaded
        self._lock = threading.Lock()  # one Plan, one set of buffers: one run at a time

    # --- description ----------------------------------------------------------------------
    @property
    def device(self):
        return self._ctx.device

    @property
    def name(self) -> str:
        return self._lowered.name

    @property
    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(t.name, tuple(t.shape)) for t in self._lowered.inputs]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(t.name, tuple(t.shape)) for t in self._lowered.outputs]

    @property
    def num_launches(self) -> int:
        return len(self._lowered.steps)

    @property
    def device_bytes(self) -> int:
        """Activation memory on the device (after buffer reuse)."""
        return self._bound.device_bytes

    @property
    def lowered(self) -> Lowered:
        return self._lowered

    @property
    def preprocessing(self) -> PreprocessSpec | None:
        """How images become this model's input (None: not recorded)."""
        return self._preprocessing

    @preprocessing.setter
    def preprocessing(self, spec) -> None:
        if isinstance(spec, dict):
            spec = PreprocessSpec.from_dict(spec)
        if spec is not None and not isinstance(spec, PreprocessSpec):
            raise TypeError(f"preprocessing must be a PreprocessSpec, a dict or None, got "
                            f"{type(spec).__name__}")
        self._preprocessing = spec

    @property
    def labels(self) -> list[str] | None:
        """Class names by output position (None: not recorded)."""
        return None if self._labels is None else list(self._labels)

    @labels.setter
    def labels(self, labels) -> None:
        self._labels = None if labels is None else tuple(label_set(labels))

    @property
    def task(self) -> str | None:
        """"classification", "detection" or None (not recorded)."""
        return self._task

    @task.setter
    def task(self, task) -> None:
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
        self._task = task

    def __repr__(self) -> str:
        return (f"CompiledModel({self.name!r}, {self.num_launches} launches on "
                f"{self.device.short_name})")

    # --- running --------------------------------------------------------------------------
    def _check_inputs(self, inputs) -> dict[str, np.ndarray]:
        specs = self._lowered.inputs
        inputs = _by_name(inputs, specs, "input")
        values = {}
        for spec in specs:
            if spec.name not in inputs:
                raise ValueError(f"missing input {spec.name!r}")
            x = inputs[spec.name]
            if is_device_array(x):  # quantization runs on the host: one download
                x = x.get()
            if not isinstance(x, np.ndarray):
                raise TypeError(f"input {spec.name!r} must be a numpy array, got "
                                f"{type(x).__name__}")
            if x.dtype != np.float32 and x.dtype != np.float64:
                raise TypeError(f"input {spec.name!r} must be float32, got {x.dtype}")
            if tuple(x.shape) != tuple(spec.shape):
                raise ValueError(f"input {spec.name!r} has shape {tuple(x.shape)}, the model "
                                 f"expects {tuple(spec.shape)}")
            if not np.all(np.isfinite(x)):
                raise ValueError(f"input {spec.name!r} holds NaN or infinite values")
            values[spec.name] = x.astype(np.float32, copy=False)
        return values

    def _host_inputs(self, values: dict[str, np.ndarray]) -> list[np.ndarray]:
        env = dict(values)
        for node in self._lowered.head:
            env[node.output] = run_host_node(node, env)
        arrays = []
        for spec in self._lowered.device_inputs:
            q = quantize(env[spec.name], spec.qparams)
            nhwc = q.transpose(0, 2, 3, 1) if q.ndim == 4 else q.reshape(q.shape[0], 1, 1, -1)
            if spec.space_to_depth is not None:  # a stem conv rewritten at lowering
                nhwc = apply_space_to_depth(
                    nhwc, spec.space_to_depth, spec.qparams.zero_point,
                    self._lowered.placements[spec.name].stride)
            arrays.append(pad_channels(nhwc, self._lowered.placements[spec.name].stride,
                                       fill=spec.qparams.zero_point))
        return arrays

    def _host_outputs(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        env = {}
        for spec, raw in zip(self._lowered.device_outputs, arrays):
            channels = self._lowered.placements[spec.name].shape[3]
            x = dequantize(raw[..., :channels], spec.qparams)
            if len(spec.shape) == 4:
                x = x.transpose(0, 3, 1, 2)
            env[spec.name] = np.ascontiguousarray(x.reshape(spec.shape))
        for node in self._lowered.tail:
            env[node.output] = run_host_node(node, env)
        return {spec.name: env[spec.name] for spec in self._lowered.outputs}

    def _output_arrays(self) -> list[np.ndarray]:
        arrays = []
        for spec in self._lowered.device_outputs:
            p = self._lowered.placements[spec.name]
            arrays.append(np.empty(p.shape[:3] + (p.stride,), dtype=np.int8))
        return arrays

    def run(self, inputs) -> dict[str, np.ndarray]:
        """Outputs by name (float32) for ``inputs``: an array for a single-input model, or a
        dict by input name, of the shapes in ``.inputs``. A pyopencl array is read back
        once (the inputs are quantized on the host); run_device keeps int8 tensors on the
        device."""
        device_in = self._host_inputs(self._check_inputs(inputs))
        device_out = self._output_arrays()
        with self._lock:
            self._bound.plan.run(device_in, device_out)
        return self._host_outputs(device_out)

    __call__ = run

    def run_int8(self, inputs) -> list[np.ndarray]:
        """The raw int8 device outputs (NHWC, padded): what bit-exactness is checked on."""
        device_in = self._host_inputs(self._check_inputs(inputs))
        device_out = self._output_arrays()
        with self._lock:
            self._bound.plan.run(device_in, device_out)
        return device_out

    # --- device tensors (pyopencl interop) ---------------------------------------------------
    @property
    def device_inputs(self) -> list[TensorInfo]:
        """The int8 tensors the device plan reads (run_device's inputs): NHWC, channels
        padded to a multiple of 16 (the padding holds the zero point), after the host's
        quantization, layout change and any rewritten stem."""
        return [self._device_info(spec) for spec in self._lowered.device_inputs]

    @property
    def device_outputs(self) -> list[TensorInfo]:
        """The int8 tensors the device plan writes (run_device's outputs), NHWC padded."""
        return [self._device_info(spec) for spec in self._lowered.device_outputs]

    def _device_info(self, spec) -> TensorInfo:
        p = self._lowered.placements[spec.name]
        return TensorInfo(spec.name, tuple(p.shape[:3]) + (p.stride,), "int8")

    def quantize_inputs(self, inputs) -> dict[str, np.ndarray]:
        """The host half of run(): ``inputs`` as run() takes them -> the int8 device inputs
        by name (``device_inputs``), what run_device takes."""
        arrays = self._host_inputs(self._check_inputs(inputs))
        return {spec.name: a for spec, a in zip(self._lowered.device_inputs, arrays)}

    def dequantize_outputs(self, outputs) -> dict[str, np.ndarray]:
        """The host tail of run(): int8 device outputs by name (``device_outputs``; numpy or
        pyopencl arrays) -> run()'s float32 outputs."""
        arrays = []
        for info in self.device_outputs:
            if info.name not in outputs:
                raise ValueError(f"missing device output {info.name!r}")
            x = outputs[info.name]
            x = x.get() if is_device_array(x) else np.asarray(x)
            if x.dtype != np.int8 or tuple(x.shape) != info.shape:
                raise ValueError(f"device output {info.name!r} must be int8 {info.shape}, "
                                 f"got {x.dtype} {tuple(x.shape)}")
            arrays.append(x)
        return self._host_outputs(arrays)

    def run_device(self, inputs) -> dict:
        """Run the device plan on int8 tensors that already live on the device: ``inputs``
        pyopencl arrays (one for a single-input model, else a dict by name) of
        ``device_inputs``' shapes, in this model's OpenCL context (compile or load it on
        ``accel.Context.from_pyopencl(...)``). Returns new pyopencl arrays of
        ``device_outputs`` by name. Only device-to-device copies: into the plan's input
        buffers, and out of its output buffers (which the next run reuses). With
        quantize_inputs and dequantize_outputs this is run() bit for bit."""
        from .. import interop
        cl = interop.pyopencl()
        specs = self.device_inputs
        inputs = _by_name(inputs, specs, "device input")
        ctx = self._ctx
        _, queue = ctx.to_pyopencl()
        with self._lock:
            for spec, buffer in zip(specs, self._bound.input_buffers):
                x = inputs.get(spec.name)
                if x is None:
                    raise ValueError(f"missing device input {spec.name!r}")
                if not interop.is_device_array(x):
                    raise TypeError(f"device input {spec.name!r} must be a pyopencl array, "
                                    f"got {type(x).__name__} (run() takes numpy arrays)")
                interop.check_same_context(ctx, x, f"device input {spec.name!r}")
                interop.check_array(x, f"device input {spec.name!r}", np.int8)
                if tuple(x.shape) != spec.shape:
                    raise ValueError(f"device input {spec.name!r} has shape {tuple(x.shape)}, "
                                     f"the model expects {spec.shape}")
                interop.ready(ctx, x)
                cl.enqueue_copy(queue, interop.cl_buffer(buffer), x.base_data,
                                byte_count=x.nbytes, src_offset=x.offset)
            queue.finish()  # a concurrent FPGA stage's other queues do not follow this one
            self._launches_only().run([], [])
            outputs = {}
            for spec, buffer in zip(self.device_outputs, self._bound.output_buffers):
                y = cl.array.empty(queue, spec.shape, np.int8)
                cl.enqueue_copy(queue, y.base_data, interop.cl_buffer(buffer),
                                byte_count=y.nbytes)
                outputs[spec.name] = y
            queue.finish()
        return outputs

    def _launches_only(self):
        """The plan's launches in a Plan with no inputs or outputs (no host copies)."""
        if self._device_plan is None:
            plan = self._ctx.plan()
            for launches in self._bound.stages:  # as the plan runs them
                if len(launches) == 1:
                    plan.add_launch(*launches[0])
                else:
                    plan.add_concurrent(launches)
            self._device_plan = plan
        return self._device_plan

    def profile(self, inputs, repeat: int = 1) -> list[LayerTime]:
        """Device time of every launch (CL profiling events), averaged over ``repeat`` runs."""
        device_in = self._host_inputs(self._check_inputs(inputs))
        with self._lock:
            return self._profile(device_in, repeat)

    def _profile(self, device_in, repeat: int) -> list[LayerTime]:
        plan = self._bound.plan
        totals = np.zeros(len(self._bound.launch_names))
        ends = np.cumsum(self._bound.launch_counts)
        plan.set_profiling(True)
        try:
            for _ in range(max(1, int(repeat))):
                plan.run(device_in, self._output_arrays())
                times = [ns for _, ns in plan.last_profile]
                # a concurrent stage takes as long as its slowest kernel
                totals += [max(times[end - count:end])
                           for end, count in zip(ends, self._bound.launch_counts)]
        finally:
            plan.set_profiling(False)
        totals /= max(1, int(repeat))
        return [LayerTime(name, op, float(ns) / 1e6)
                for name, op, ns in zip(self._bound.launch_names, self._bound.stage_ops, totals)]

    def trace(self, inputs) -> dict[str, np.ndarray]:
        """Every step's output, dequantized, in its logical (NCHW) shape: the steps run one
        by one (one small Plan each) and each output is read back before a later step can
        reuse its buffer. For debugging and the per-layer error report, not for speed."""
        device_in = self._host_inputs(self._check_inputs(inputs))
        with self._lock:
            return self._trace(device_in)

    def _trace(self, device_in) -> dict[str, np.ndarray]:
        bound, lowered = self._bound, self._lowered
        queue = self._ctx.queue
        for buffer, array in zip(bound.input_buffers, device_in):
            buffer.write(queue, array)
        values = {}
        for step, launches in zip(lowered.steps, bound.step_launches):
            plan = self._ctx.plan()
            if len(launches) == 1:
                plan.add_launch(*launches[0])
            else:
                plan.add_concurrent(launches)
            plan.run([], [])
            p = lowered.placements[step.output]
            buffer = bound.buffer_of[p.root]
            raw = np.empty(buffer.nbytes, dtype=np.int8)
            buffer.read(queue, raw)
            n, h, w, c = p.shape
            q = raw[:n * h * w * p.stride].reshape(n, h, w, p.stride)[..., p.offset:p.offset + c]
            scale, zero_point = step.attrs["output_qparams"]
            x = dequantize(q, QParams(scale, zero_point)).transpose(0, 3, 1, 2)
            values[step.output] = np.ascontiguousarray(x)
        return values

    # --- saving ---------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the model to directory ``path`` (created; files in it overwritten)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        doc, arrays = to_document(self._lowered)
        doc = {"format": FORMAT, "version": VERSION, **doc}
        doc["preprocessing"] = None if self.preprocessing is None else self.preprocessing.to_dict()
        doc["labels"] = self.labels
        doc["task"] = self.task
        if self.fpga_design is not None:
            doc["fpga_design"] = fpga_presets.to_dict(self.fpga_design)
        params = path / PARAMS_FILE
        np.savez(params, **arrays)
        doc["params_sha256"] = _sha256(params)
        (path / MODEL_FILE).write_text(json.dumps(doc))
        return path


def _by_name(inputs, specs, what: str) -> dict:
    """``inputs`` as a dict by name: a single value for a single-input model, or a dict whose
    names must all be in ``specs`` (missing ones are the caller's to check)."""
    if not isinstance(inputs, Mapping):
        if len(specs) != 1:
            raise TypeError(f"the model has {what}s {[s.name for s in specs]}: pass a dict "
                            "by name")
        inputs = {specs[0].name: inputs}
    unknown = set(inputs) - {s.name for s in specs}
    if unknown:
        raise ValueError(f"unknown {what}(s) {sorted(unknown)}; the model's {what}s are "
                         f"{[s.name for s in specs]}")
    return inputs


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load(path, device=None) -> CompiledModel:
    """A model saved by CompiledModel.save, bound to ``device`` (default: the best present)."""
    path = Path(path)
    model_file, params_file = path / MODEL_FILE, path / PARAMS_FILE
    if not path.is_dir():
        raise ModelLoadError(f"{os.fspath(path)!r} is not a directory holding a compiled model")
    for f in (model_file, params_file):
        if not f.is_file():
            raise ModelLoadError(f"compiled model {os.fspath(path)!r} lacks {f.name}")
    try:
        doc = json.loads(model_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{model_file} is corrupted or truncated (not valid JSON: "
                             f"{e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelLoadError(f"{model_file} is not an accel compiled model")
    if doc.get("version") != VERSION:
        raise ModelLoadError(f"{model_file} has format version {doc.get('version')!r}; this "
                             f"accel reads version {VERSION}")
    if doc.get("params_sha256") != _sha256(params_file):
        raise ModelLoadError(f"{params_file} is corrupted or truncated (its SHA-256 does not "
                             f"match the one recorded in {MODEL_FILE})")
    try:
        with np.load(params_file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        lowered = from_document(doc, arrays)
        # absent from artifacts saved before they were recorded
        metadata = {key: doc.get(key) for key in ("preprocessing", "labels", "task")}
        if doc.get("fpga_design") is not None:
            metadata["fpga_design"] = fpga_presets.from_dict(doc["fpga_design"])
        return CompiledModel(lowered, device, **metadata)
    except (KeyError, TypeError, ValueError, IndexError, zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(f"compiled model {os.fspath(path)!r} is malformed: "
                             f"{type(e).__name__}: {e}") from None
