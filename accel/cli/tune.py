"""``accel tune [--device D] [--quick]``: measure conv.cl's and winograd.cl's candidate
knobs, and which of the two runs each 3x3 stride-1 layer, per ResNet-50 conv layer shape on
one device, and write the device's best defaults and each shape's own winners to the user's
tuning file (accel/tuner.py), which wins over the shipped kernels/tuning.json from then on."""

from __future__ import annotations

import json

import click

from ._common import console, device_option


@click.command("tune", short_help="tune the conv kernels' knobs and choice per layer shape")
@device_option
@click.option("--quick", is_flag=True,
              help="8 layer shapes, 4 conv.cl and 2 winograd.cl candidates, 5 rounds, "
                   "at most 3 minutes")
@click.option("--budget", "budget_s", type=click.FloatRange(min=1), default=None,
              metavar="SECONDS",
              help="stop measuring new layer shapes after this long (default 180 with "
                   "--quick, else 1800)")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="the tuning file to write (default: ACCEL_TUNING_FILE, else "
                   "~/.config/accel/tuning.json)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def tune_command(device, quick, budget_s, output, as_json) -> None:
    """Time every candidate set of conv.cl knobs (and winograd.cl's, on 3x3 stride-1
    shapes) on each ResNet-50 conv layer shape on the device, in rotation; write the set
    that makes the network's convs fastest as the device's default, each shape's own winner
    where it consistently beats that by 3%, and which kernel each 3x3 stride-1 shape runs,
    under the device's tuning key in the user's tuning file. Timings on a shared machine
    are noisy: run it on an idle one."""
    from .. import tuner
    command = " ".join(["accel tune"] + (["--device", device] if device else [])
                       + (["--quick"] if quick else [])
                       + (["--budget", f"{budget_s:g}"] if budget_s else [])
                       + (["-o", output] if output else []))
    result = tuner.tune(device, quick=quick, budget_s=budget_s, path=output, command=command)
    if as_json:
        click.echo(json.dumps(dict(
            device=result.device.short_name, tuning_key=result.tuning_key,
            shipped=result.shipped, chosen=result.chosen, shapes=result.shapes,
            winograd_shipped=result.winograd_shipped, winograd_chosen=result.winograd_chosen,
            winograd_shapes=result.winograd_shapes, load=list(result.load),
            file=str(result.path), speedup=result.speedup,
            skipped=[list(s) for s in result.skipped],
            layers=[dict(shape=list(r.shape), shape_class=r.shape_class, count=r.count,
                         kernel=r.kernel, shipped_kernel=r.shipped_kernel,
                         knobs=r.knobs, own_entry=r.own_entry, shipped_ms=r.shipped_ms,
                         default_ms=r.default_ms, tuned_ms=r.tuned_ms, speedup=r.speedup,
                         conv_ms=r.direct_ms, winograd_ms=r.winograd_ms)
                    for r in result.layers])))
        return
    from rich.table import Table
    table = Table("layer (N,H,W,CIN,COUT,K,S,P)", "x", "shipped", "tuned: kernel, knobs",
                  "conv.cl ms", "winograd ms", "shipped ms", "tuned ms", "speed-up")
    for r in result.layers:
        knobs = " ".join(f"{k}={v}" for k, v in sorted(r.knobs.items()))
        table.add_row(",".join(map(str, r.shape)), str(r.count), r.shipped_kernel,
                      f"{r.kernel} {knobs}" + (" (own)" if r.own_entry else ""),
                      f"{r.direct_ms:.3f}",
                      "-" if r.winograd_ms is None else f"{r.winograd_ms:.3f}",
                      f"{r.shipped_ms:.3f}", f"{r.tuned_ms:.3f}", f"{r.speedup:.2f}x")
    out = console()
    out.print(table)
    knobs = " ".join(f"{k}={v}" for k, v in sorted(result.chosen.items()))
    tiles = " ".join(f"{k}={v}" for k, v in sorted(result.winograd_chosen.items()))
    entries = len(result.shapes) + sum(len(v) > 1 for v in result.winograd_shapes.values())
    load = " -> ".join(f"{v:.2f}" for v in result.load)
    out.print(f"{result.tuning_key}: conv.cl default {knobs}, winograd.cl default {tiles}, "
              f"{entries} shape knob entr{'y' if entries == 1 else 'ies'}, "
              f"{len(result.winograd_shapes)} kernel selection(s) (network convs "
              f"{result.speedup:.2f}x the shipped table's speed; load {load}) -> "
              f"{result.path}")
    if result.skipped:
        out.print(f"the budget ran out: {len(result.skipped)} layer shape(s) not measured")


def register(group: click.Group) -> None:
    group.add_command(tune_command)
