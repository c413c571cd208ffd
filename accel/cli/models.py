"""``accel models`` (the zoo) and ``accel models build NAME -o model.onnx``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import console


def _task(name: str) -> str:
    from ..models import zoo
    tasks = getattr(zoo, "TASKS", None)
    if tasks and name in tasks:
        return tasks[name]
    return "detection" if name.startswith("ssd") else "classification"


def zoo_rows() -> list[dict]:
    from .. import models, sources
    aliases = sources.zoo_aliases()
    rows = []
    for name in models.MODEL_NAMES + models.PRETRAINED_NAMES:
        outputs = models.output_names(name)
        rows.append(dict(name=name, input_shape=list(models.input_shape(name)),
                         outputs=outputs, task=_task(name),
                         seed_names=sorted(a for a, n in aliases.items() if n == name),
                         weights="pretrained" if name in models.PRETRAINED_NAMES
                         else "placeholder"))
    return rows


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
@click.pass_context
def models_group(ctx: click.Context, as_json: bool) -> None:
    """The model zoo: ResNet-50/152, DenseNet-121, VGG-16 and SSD-VGG300 with the seed's
    tensor names. Their weights are deterministic placeholders (nothing is downloaded), so
    their predicted labels are not meaningful; for real weights bring an ONNX or TensorFlow
    model (accel convert). EfficientNet-Lite0 has its ImageNet-trained weights (the
    [pretrained] extra). With no subcommand: list them."""
    if ctx.invoked_subcommand is not None:
        return
    rows = zoo_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table
    table = Table(title="model zoo", title_justify="left")
    for column in ("name", "seed name", "input (NCHW)", "outputs", "task", "weights"):
        table.add_column(column)
    for row in rows:
        outputs = row["outputs"]
        shown = outputs[0] if len(outputs) == 1 else f"{len(outputs)} tensors ({outputs[0]}, ...)"
        table.add_row(row["name"], ", ".join(row["seed_names"]) or "-",
                      "x".join(map(str, row["input_shape"])), shown, row["task"],
                      "ImageNet-trained (\\[pretrained] extra)" if row["weights"] == "pretrained"
                      else "deterministic placeholders")
    console().print(table)


@models_group.command("build")
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="the .onnx file to write")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="seed of the deterministic weights")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--input-layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW",
              show_default=True, help="NHWC: a channels-last input, as tf2onnx writes it")
def build_command(name: str, output: str, seed: int, batch: int, input_layout: str) -> None:
    """Write zoo model NAME (or a seed name such as QuantizedResnet50) as an ONNX file, with
    deterministic placeholder weights; the classifiers' last layer is centred so that
    different photos get different classes. efficientnet_lite0 has its ImageNet-trained
    weights (the [pretrained] extra; --seed does not apply)."""
    import onnx

    from .. import models, sources
    canonical = sources.zoo_name(name)
    if canonical is None:
        known = ", ".join(sources.zoo_names() + tuple(sources.zoo_aliases()))
        raise ValueError(f"unknown model {name!r}; zoo models: {known}")
    model = sources.build_zoo(canonical, batch=batch, seed=seed, input_layout=input_layout)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    weights = "trained weights" if canonical in models.PRETRAINED_NAMES else f"seed {seed}"
    click.echo(f"wrote {path} ({canonical}, batch {batch}, {input_layout}, {weights}, "
               f"{path.stat().st_size / 1e6:.1f} MB)")


def register(group: click.Group) -> None:
    group.add_command(models_group)
