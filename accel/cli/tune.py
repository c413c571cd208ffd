"""``accel tune [--device D] [--quick]``: measure conv.cl's candidate knobs on ResNet-50's
layer shapes on one device and write the best to the user's tuning file (accel/tuner.py),
which wins over the shipped kernels/tuning.json from then on."""

from __future__ import annotations

import json

import click

from ._common import console, device_option


@click.command("tune", short_help="tune the conv kernel's knobs for this device")
@device_option
@click.option("--quick", is_flag=True,
              help="4 layers, 4 candidates, 3 launches each (about a minute)")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="the tuning file to write (default: ACCEL_TUNING_FILE, else "
                   "~/.config/accel/tuning.json)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def tune_command(device, quick, output, as_json) -> None:
    """Time every candidate set of conv.cl knobs on each ResNet-50 conv layer shape on the
    device, keep the set that makes the network's convs fastest, and write it under the
    device's tuning key to the user's tuning file. Timings on a shared machine are noisy:
    run it on an idle one."""
    from .. import tuner
    result = tuner.tune(device, quick=quick, path=output)
    if as_json:
        click.echo(json.dumps(dict(
            device=result.device.short_name, tuning_key=result.tuning_key,
            shipped=result.shipped, chosen=result.chosen, file=str(result.path),
            speedup=result.speedup,
            layers=[dict(shape=list(r.shape), count=r.count, shipped_ms=r.shipped_ms,
                         tuned_ms=r.tuned_ms, speedup=r.speedup) for r in result.layers])))
        return
    from rich.table import Table
    table = Table("layer (N,H,W,CIN,COUT,K,S,P)", "x", "shipped ms", "tuned ms", "speed-up")
    for r in result.layers:
        table.add_row(",".join(map(str, r.shape)), str(r.count), f"{r.shipped_ms:.3f}",
                      f"{r.tuned_ms:.3f}", f"{r.speedup:.2f}x")
    out = console()
    out.print(table)
    knobs = " ".join(f"{k}={v}" for k, v in sorted(result.chosen.items()))
    out.print(f"{result.tuning_key}: {knobs} (network convs {result.speedup:.2f}x the shipped "
              f"knobs' speed) -> {result.path}")


def register(group: click.Group) -> None:
    group.add_command(tune_command)
