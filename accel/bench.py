"""accel's benchmark_app: latency percentiles and throughput of a compiled model on a device,
next to onnxruntime fp32 and onnxruntime int8 (its own quantize_static QDQ of the same model,
u8 activations / s8 per-channel weights, calibrated on the same inputs), with the same
number of threads, in the same run.

    result = accel.bench.benchmark("resnet50", device="pocl", iterations=50)
    rich.print(result.table())                 # or result.to_dict()

The runners take turns, one run each per round, so that a shared machine's changing load
falls on all of them alike. Threads: onnxruntime's intra-op threads; for the OpenCL CPU
runtimes the worker count is an environment setting read when the first OpenCL call is
made (``set_device_threads`` before that; ``accel bench --threads`` does it).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

CALIBRATION_IMAGES = 4  # bundled photos (or synthetic images) to calibrate on
# The OpenCL CPU runtimes' worker-count settings (read once, at their first use).
THREAD_ENV = ("POCL_MAX_PTHREAD_COUNT", "CL_CONFIG_CPU_TBB_NUM_WORKERS")


def set_device_threads(threads: int) -> None:
    """Ask PoCL and Intel's CPU runtime for ``threads`` workers. Only effective before the
    process's first OpenCL call."""
    for name in THREAD_ENV:
        os.environ[name] = str(int(threads))


@dataclass
class Timing:
    """One runner's batch latencies."""
    runner: str        # "accel int8", "onnxruntime fp32", "onnxruntime int8 (QDQ)"
    device: str        # where it ran
    latencies_ms: list[float]
    batch: int = 1

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def mean(self) -> float:
        return float(np.mean(self.latencies_ms))

    @property
    def throughput(self) -> float:
        """Images per second, running batches back to back."""
        return self.batch * len(self.latencies_ms) / (sum(self.latencies_ms) / 1e3)

    def to_dict(self) -> dict:
        return dict(runner=self.runner, device=self.device, batch=self.batch,
                    iterations=len(self.latencies_ms), p50_ms=self.p50, p90_ms=self.p90,
                    p99_ms=self.p99, mean_ms=self.mean, throughput_ips=self.throughput)


@dataclass
class BenchResult:
    model: str
    device: str          # the accel device, "P:D  platform / name"
    threads: int
    iterations: int
    batch: int
    timings: list[Timing]
    compile_s: float | None = None
    layers: list | None = None   # CompiledModel.profile() when asked for
    notes: list[str] = field(default_factory=list)

    def baseline(self) -> Timing | None:
        return next((t for t in self.timings if t.runner == "onnxruntime fp32"), None)

    def to_dict(self) -> dict:
        base = self.baseline()
        timings = []
        for t in self.timings:
            row = t.to_dict()
            row["p50_vs_onnxruntime_fp32"] = t.p50 / base.p50 if base else None
            timings.append(row)
        layers = None if self.layers is None else [
            dict(name=t.name, op=t.op, ms=t.ms) for t in self.layers]
        return dict(model=self.model, device=self.device, threads=self.threads,
                    iterations=self.iterations, batch=self.batch, compile_s=self.compile_s,
                    timings=timings, layers=layers, notes=list(self.notes))

    def table(self):
        """A rich Table: one row per runner."""
        from rich.markup import escape
        from rich.table import Table
        base = self.baseline()
        table = Table(title=f"{escape(self.model)}, batch {self.batch}, {self.threads} threads, "
                            f"{self.iterations} runs each", title_justify="left")
        for name in ("runner", "device", "p50 ms", "p90 ms", "p99 ms", "mean ms", "images/s",
                     "p50 / ort fp32"):
            table.add_column(name, justify="left" if name in ("runner", "device") else "right")
        for t in self.timings:
            ratio = f"{t.p50 / base.p50:.2f}" if base else "-"
            table.add_row(t.runner, t.device, f"{t.p50:.2f}", f"{t.p90:.2f}", f"{t.p99:.2f}",
                          f"{t.mean:.2f}", f"{t.throughput:.1f}", ratio)
        return table


def layer_table(layers, title: str = "per-layer device time"):
    """A rich Table of CompiledModel.profile()'s LayerTimes, in execution order."""
    from rich.markup import escape
    from rich.table import Table
    total = sum(t.ms for t in layers) or 1.0
    table = Table(title=f"{escape(title)}: {total:.2f} ms in {len(layers)} launches",
                  title_justify="left")
    for name, justify in (("#", "right"), ("layer", "left"), ("op", "left"), ("ms", "right"),
                          ("%", "right")):
        table.add_column(name, justify=justify)
    for i, t in enumerate(layers):
        table.add_row(str(i), escape(t.name), t.op, f"{t.ms:.3f}", f"{100 * t.ms / total:.1f}")
    return table


def plot_layers(layers, path, title: str = "per-layer device time") -> Path:
    """A horizontal bar chart of the layers' times (matplotlib, the [plot] extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ValueError(f"--plot needs matplotlib (the [plot] extra): {e}") from None
    path = Path(path)
    names = [f"{t.name} ({t.op})" for t in layers]
    times = [t.ms for t in layers]
    height = max(3.0, 0.18 * len(layers) + 1.0)
    fig, ax = plt.subplots(figsize=(10, height))
    try:
        ax.barh(range(len(times)), times, color="tab:blue")
        ax.set_yticks(range(len(times)), names, fontsize=6)
        ax.invert_yaxis()  # execution order, top to bottom
        ax.set_xlabel("device time (ms)")
        ax.set_title(f"{title}: {sum(times):.2f} ms in {len(times)} launches")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


@contextmanager
def _quiet_logging():
    """onnxruntime.quantization logs advice through the root logger; keep it off stderr."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def ort_session(model, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # The runners take turns: onnxruntime's idle threads would otherwise spin on after each
    # of its runs and take the cores from the next runner (measured on ResNet-50, 2 cores:
    # accel 87 ms after onnxruntime with spinning, 62 ms without; onnxruntime's own latency
    # the same either way, 56 ms).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def ort_quantize(model, inputs: list[np.ndarray]):
    """onnxruntime's own int8 model: quantize_static, QDQ, u8 activations, s8 per-channel
    weights, calibrated on ``inputs``. Returns the QDQ onnx.ModelProto."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    name = _input_names(model)[0]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: x} for x in inputs])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp, _quiet_logging():
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
        return onnx.load(dst)


def _input_names(model) -> list[str]:
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def synthetic_inputs(shape, count: int, seed: int = 0) -> list[np.ndarray]:
    """Mean-subtracted-pixel-like noise (std 60) of ``shape``."""
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 60, shape).astype(np.float32) for _ in range(count)]


def model_inputs(proto, *, count: int = CALIBRATION_IMAGES, progress: bool = True
                 ) -> tuple[list[np.ndarray], str]:
    """Inputs for an ONNX model: the bundled photos through its preprocessing, or synthetic
    images when there are none or its input is not an image. Returns (inputs, what)."""
    from . import images, sources
    photos = images.bundled_photos()[:count]
    batch = sources.input_batch(proto)
    if photos:
        try:
            spec = sources.preprocessing_of(proto)
            inputs = images.calibration_inputs(photos, spec, batch=batch, progress=progress)
            return inputs, f"{len(photos)} bundled photos"
        except (ValueError, ImportError):
            pass
    shape = tuple(d or (batch if i == 0 else 1) for i, d in enumerate(sources.input_shape(proto)))
    return synthetic_inputs(shape, count), f"{count} synthetic images"


def artifact_input(compiled) -> np.ndarray | dict[str, np.ndarray]:
    """An input for a loaded compiled model: a bundled photo through the preprocessing it
    records, else synthetic images (a dict by name for several inputs)."""
    from . import images
    photos = images.bundled_photos()
    spec = compiled.preprocessing
    if len(compiled.inputs) == 1 and spec is not None and photos:
        from .preprocess import preprocess, to_model_input
        batch = compiled.inputs[0].shape[0]
        nhwc = preprocess([photos[i % len(photos)].read_bytes() for i in range(batch)], spec)
        return to_model_input(nhwc, spec)
    arrays = {t.name: synthetic_inputs(t.shape, 1, seed=i)[0]
              for i, t in enumerate(compiled.inputs)}
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def time_runners(runners: dict[str, Callable[[], object]], *, iterations: int, warmup: int,
                 progress: bool = True) -> dict[str, list[float]]:
    """Latencies (ms) of each runner, taking turns: one run of each per round."""
    from .progress import task
    for run in runners.values():
        for _ in range(warmup):
            run()
    latencies: dict[str, list[float]] = {name: [] for name in runners}
    with task("timing:", total=iterations * len(runners), unit="runs",
              enabled=progress) as advance:
        for _ in range(iterations):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                latencies[name].append((time.perf_counter() - start) * 1e3)
                advance()
    return latencies


def compile_for_timing(proto, device, progress: bool):
    """(CompiledModel, its calibration inputs, what they are) for a single-input ONNX model;
    a dynamic batch is fixed to the inputs' batch."""
    import accel
    from . import sources
    if len(_input_names(proto)) != 1:
        raise ValueError(f"the model has inputs {_input_names(proto)}: accel bench and profile "
                         "take single-input models")
    inputs, what = model_inputs(proto, progress=progress)
    shapes = sources.static_input_shapes(proto, int(inputs[0].shape[0]))
    compiled = accel.compile(proto, calibration=inputs, device=device, progress=progress,
                             input_shapes=shapes)
    return compiled, inputs, what


def benchmark(model, *, device=None, threads: int | None = None, iterations: int = 100,
              warmup: int = 5, onnxruntime: bool = True, per_layer: bool = False,
              progress: bool = True) -> BenchResult:
    """Benchmark ``model``: a zoo name, an .onnx path or a compiled model directory (then
    without the onnxruntime runners: a compiled model does not keep its ONNX source). Zoo
    and ONNX models are compiled first, calibrated on a few bundled photos (or synthetic
    images); onnxruntime int8 is calibrated on the same inputs."""
    import accel
    from . import sources
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    threads = int(threads or os.cpu_count() or 1)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    device = accel.select_device(device)  # a bad selector fails before the slow part
    source = sources.resolve(model)
    notes: list[str] = []
    proto, compile_s = None, None
    if source.kind == "compiled":
        compiled = accel.load(source.ref, device=device)
        x = artifact_input(compiled)
        if onnxruntime:
            notes.append("onnxruntime runners skipped: a compiled model does not keep its ONNX "
                         "source (bench the .onnx file or zoo name to see them)")
            onnxruntime = False
    else:
        proto = sources.onnx_model(source)
        start = time.perf_counter()
        compiled, inputs, what = compile_for_timing(proto, device, progress)
        compile_s = time.perf_counter() - start
        notes.append(f"calibrated on {what}")
        x = inputs[0]
    runners: dict[str, Callable[[], object]] = {"accel int8": lambda: compiled.run(x)}
    devices = {"accel int8": compiled.device.short_name}
    if onnxruntime:
        feed = {_input_names(proto)[0]: x}
        qdq = sources.is_qdq(proto)
        fp32 = ort_session(proto, threads)
        label = "onnxruntime int8 (the model's QDQ)" if qdq else "onnxruntime fp32"
        runners[label] = lambda: fp32.run(None, feed)
        if not qdq:
            from .progress import task
            with task("onnxruntime quantize_static:", total=1, enabled=progress) as advance:
                int8 = ort_session(ort_quantize(proto, inputs), threads)
                advance()
            runners["onnxruntime int8 (QDQ)"] = lambda: int8.run(None, feed)
        for name in runners:
            devices.setdefault(name, "CPU")
    latencies = time_runners(runners, iterations=iterations, warmup=warmup, progress=progress)
    batch = int(compiled.inputs[0].shape[0])
    timings = [Timing(name, devices[name], values, batch) for name, values in latencies.items()]
    layers = compiled.profile(x, repeat=3) if per_layer else None
    d = compiled.device
    return BenchResult(model=source.ref, device=f"{d.index}  {d.platform} / {d.name}",
                       threads=threads, iterations=iterations, batch=batch, timings=timings,
                       compile_s=compile_s, layers=layers, notes=notes)


def profile(model, *, device=None, repeat: int = 10, progress: bool = True):
    """(CompiledModel, its per-layer device times) for a zoo name, .onnx path or compiled
    model directory."""
    import accel
    from . import sources
    device = accel.select_device(device)
    source = sources.resolve(model)
    if source.kind == "compiled":
        compiled = accel.load(source.ref, device=device)
        x = artifact_input(compiled)
    else:
        compiled, inputs, _ = compile_for_timing(sources.onnx_model(source), device, progress)
        x = inputs[0]
    return compiled, compiled.profile(x, repeat=repeat)
