"""``accel compile MODEL -o model.accel``: an ONNX file, a zoo name or a TensorFlow model to an
int8 compiled model directory, calibrated on a folder of images through the model's own
preprocessing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from ._common import console, device_option

PREPROCESSING = ("imagenet", "ssd300")
LABEL_SETS = ("imagenet", "voc")


def read_labels(value: str | None):
    """A bundled label set's name as is, or the lines of a text file (one label a line)."""
    if value is None or value in LABEL_SETS:
        return value
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"--labels {value!r}: not {' or '.join(LABEL_SETS)}, and no such "
                                "file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"--labels file {value!r} is not UTF-8 text") from None
    labels = [line.strip() for line in lines if line.strip()]
    if not labels:
        raise ValueError(f"--labels file {value!r} holds no labels")
    return labels


def preprocessing_spec(proto, name: str | None):
    """--preprocessing NAME fitted to the model's input (its layout and size), else what the
    model records."""
    from .. import preprocess, sources
    if name is None:
        return sources.preprocessing_of(proto)
    base = {"imagenet": preprocess.IMAGENET, "ssd300": preprocess.SSD300}[name]
    return sources.fit_preprocessing(proto, base)


@click.command("compile")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="the compiled model directory to write (e.g. model.accel)")
@click.option("--calibration", "calibration", metavar="DIR", type=click.Path(),
              help="a folder of JPEG/PNG images to choose int8 scales on (default: the "
                   "bundled photos; not needed for an int8 QDQ model)")
@device_option
@click.option("--observer", type=click.Choice(["minmax", "percentile", "mse", "auto"]),
              default="minmax", show_default=True,
              help="how activation ranges are chosen (mse: least int8 error; auto: min/max "
                   "where a ReLU6 bounds a tensor, mse elsewhere)")
@click.option("--preprocessing", type=click.Choice(PREPROCESSING), default=None,
              help="the images' preprocessing (default: what the model records, else "
                   "imagenet fitted to its input)")
@click.option("--labels", default=None, metavar="imagenet|voc|FILE",
              help="class names: a bundled set or a text file, one name a line")
@click.option("--report", is_flag=True,
              help="measure every layer's int8 error against the float model")
@click.option("--bias-correction", type=click.Choice(["analytic", "empirical"]),
              is_flag=False, flag_value="analytic", default=None,
              help="correct each conv's bias on the calibration images (trained nets: "
                   "EfficientNet-Lite0): analytic (the flag alone) for its int8 weights' "
                   "mean error; empirical for the whole int8 network's error up to that "
                   "layer (slower to compile)")
@click.option("--weight-rounding", type=click.Choice(["nearest", "adaround", "block"]),
              default="nearest", show_default=True,
              help="int8 weights: nearest rounding; adaround (each weight up or down as "
                   "the layer's output on the calibration images needs); or block (the same, "
                   "learnt for each block of layers against the block's output); slower to "
                   "compile")
@click.option("--adaround-iterations", type=click.IntRange(min=1), default=None,
              help="optimisation steps per layer (adaround) or per block (block); default 300")
@click.option("--fpga-design", default=None, metavar="NAME",
              help="on an FPGA or the FPGA emulator, the bitstream's design: default "
                   "(VEC 16 x LANE 16, broadcast), board (the Arria 10 design the estimator "
                   "models: VEC 32 x LANE 64, systolic) or persistent; saved with the model")
def compile_command(model, output, calibration, device, observer, preprocessing, labels,
                    report, bias_correction=None, weight_rounding="nearest",
                    adaround_iterations=None, fpga_design=None) -> None:
    """Compile MODEL to int8 for a device. MODEL: an .onnx file, a zoo name (resnet50, ...,
    or a seed name such as QuantizedResnet50), or a TensorFlow SavedModel directory,
    .keras/.h5 file or frozen .pb. The output directory loads with accel.load and runs with
    accel classify / detect / run."""
    import accel

    from .. import images, sources
    from ..devices import select_device
    from ..fpga import presets as fpga_presets
    labels = read_labels(labels)
    target = select_device(device)  # fail early on a bad device
    fpga_design = fpga_presets.resolve(fpga_design)  # and on an unknown design name
    calibration_files = images.image_files([calibration]) if calibration else None
    source = sources.resolve(model)
    if source.kind == "compiled":
        raise ValueError(f"{model!r} is already a compiled model")
    out = console(stderr=True)
    proto = sources.onnx_model(source)
    spec = preprocessing_spec(proto, preprocessing)
    batch = sources.input_batch(proto)
    inputs = None
    if calibration_files is None and not sources.is_qdq(proto):
        calibration_files = images.bundled_photos()
        if not calibration_files:
            raise ValueError("the model is fp32: give --calibration DIR (a folder of "
                             "representative images)")
        out.print(f"calibrating on the {len(calibration_files)} bundled photos "
                  "(--calibration DIR for your own images)", markup=False)
    if calibration_files:
        inputs = images.calibration_inputs(calibration_files, spec, batch=batch)
    out.print(f"compiling {source} to int8 for {target.index} {target.platform} / "
              f"{target.name}", markup=False)
    start = time.perf_counter()
    compiled = accel.compile(proto, calibration=inputs, device=target, observer=observer,
                             report=report, bias_correction=bias_correction or False,
                             weight_rounding=weight_rounding,
                             adaround_iterations=adaround_iterations, preprocessing=spec,
                             labels=labels,
                             input_shapes=sources.static_input_shapes(proto, batch),
                             fpga_design=fpga_design)
    path = compiled.save(output)
    size = compiled.device_bytes
    memory = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
    out.print(f"compiled in {time.perf_counter() - start:.1f} s: {compiled.num_launches} "
              f"launches, {memory} of activations on the device")
    if report and compiled.layer_errors:
        _print_report(compiled.layer_errors)
    click.echo(f"wrote {os.fspath(path)}")


def _print_report(errors) -> None:
    from rich.markup import escape
    from rich.table import Table
    table = Table(title="int8 error per layer vs the float model (first calibration input)",
                  title_justify="left")
    for name, justify in (("layer", "left"), ("op", "left"), ("cosine", "right"),
                          ("relative error", "right")):
        table.add_column(name, justify=justify)
    for e in errors:
        table.add_row(escape(e.name), e.op, f"{e.cosine:.4f}", f"{e.relative_error:.4f}")
    console().print(table)


def register(group: click.Group) -> None:
    group.add_command(compile_command)
