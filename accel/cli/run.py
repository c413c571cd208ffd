"""``accel run MODEL INPUT.npy|INPUT.npz [-o OUT.npz]``: raw tensors through a compiled
model (CompiledModel.run)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import click
import numpy as np

from ._common import console, device_option


def read_inputs(path: Path, names: list[str]):
    """An .npy array (a single-input model) or an .npz archive keyed by input name."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {os.fspath(path)!r}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{os.fspath(path)!r} is not a readable .npy/.npz file: {e}") from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise ValueError(f"the model has inputs {names}: give an .npz keyed by input name")
        return loaded
    with loaded:
        unknown = sorted(set(loaded.files) - set(names))
        missing = [n for n in names if n not in loaded.files]
        if unknown or missing:
            raise ValueError(f"{os.fspath(path)!r} holds {sorted(loaded.files)}; the model's "
                             f"inputs are {names}")
        return {name: loaded[name] for name in names}


@click.command("run")
@click.argument("model")
@click.argument("inputs", metavar="INPUT.npy|INPUT.npz")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="write the outputs to this .npz (keys: output names)")
@device_option
def run_command(model, inputs, output, device) -> None:
    """Run compiled model MODEL on raw float32 tensors: an .npy array for a single-input
    model, or an .npz archive whose keys are the input names. Prints each output's shape and
    range; -o saves them."""
    import accel

    from .classify import compiled_model_path
    compiled = accel.load(compiled_model_path(model), device=device)
    values = read_inputs(Path(inputs), [t.name for t in compiled.inputs])
    results = compiled.run(values)
    from rich.markup import escape
    from rich.table import Table
    table = Table(title=f"{escape(compiled.name)} on {compiled.device.short_name}", title_justify="left")
    for column in ("output", "shape", "min", "max", "argmax (flat)"):
        table.add_column(column, justify="left" if column in ("output", "shape") else "right")
    for name, value in results.items():
        table.add_row(escape(name), "x".join(map(str, value.shape)), f"{value.min():.5g}",
                      f"{value.max():.5g}", str(int(np.argmax(value))))
    console().print(table)
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # a file object: np.savez would append .npz to the name
            np.savez(f, **results)
        click.echo(f"wrote {os.fspath(path)}")


def register(group: click.Group) -> None:
    group.add_command(run_command)
