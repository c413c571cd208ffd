"""``accel tune [--device D] [--quick]``: measure conv.cl's candidate knobs per ResNet-50
conv layer shape on one device and write the device's best default and each shape's own
winner to the user's tuning file (accel/tuner.py), which wins over the shipped
kernels/tuning.json from then on."""

from __future__ import annotations

import json

import click

from ._common import console, device_option


@click.command("tune", short_help="tune the conv kernel's knobs per layer shape for this device")
@device_option
@click.option("--quick", is_flag=True,
              help="4 layer shapes, 4 candidates, 3 launches each, at most 2 minutes")
@click.option("--budget", "budget_s", type=click.FloatRange(min=1), default=None,
              metavar="SECONDS",
              help="stop measuring new layer shapes after this long (default 120 with "
                   "--quick, else 1800)")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="the tuning file to write (default: ACCEL_TUNING_FILE, else "
                   "~/.config/accel/tuning.json)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def tune_command(device, quick, budget_s, output, as_json) -> None:
    """Time every candidate set of conv.cl knobs on each ResNet-50 conv layer shape on the
    device; write the set that makes the network's convs fastest as the device's default,
    and each shape's own winner where it beats that, under the device's tuning key in the
    user's tuning file. Timings on a shared machine are noisy: run it on an idle one."""
    from .. import tuner
    result = tuner.tune(device, quick=quick, budget_s=budget_s, path=output)
    if as_json:
        click.echo(json.dumps(dict(
            device=result.device.short_name, tuning_key=result.tuning_key,
            shipped=result.shipped, chosen=result.chosen, shapes=result.shapes,
            file=str(result.path), speedup=result.speedup,
            skipped=[list(s) for s in result.skipped],
            layers=[dict(shape=list(r.shape), shape_class=r.shape_class, count=r.count,
                         knobs=r.knobs, own_entry=r.own_entry, shipped_ms=r.shipped_ms,
                         default_ms=r.default_ms, tuned_ms=r.tuned_ms, speedup=r.speedup)
                    for r in result.layers])))
        return
    from rich.table import Table
    table = Table("layer (N,H,W,CIN,COUT,K,S,P)", "x", "knobs", "shipped ms", "tuned ms",
                  "speed-up")
    for r in result.layers:
        knobs = " ".join(f"{k}={v}" for k, v in sorted(r.knobs.items()))
        table.add_row(",".join(map(str, r.shape)), str(r.count),
                      knobs + (" (own)" if r.own_entry else ""), f"{r.shipped_ms:.3f}",
                      f"{r.tuned_ms:.3f}", f"{r.speedup:.2f}x")
    out = console()
    out.print(table)
    knobs = " ".join(f"{k}={v}" for k, v in sorted(result.chosen.items()))
    out.print(f"{result.tuning_key}: default {knobs}, {len(result.shapes)} shape entr"
              f"{'y' if len(result.shapes) == 1 else 'ies'} (network convs "
              f"{result.speedup:.2f}x the shipped knobs' speed) -> {result.path}")
    if result.skipped:
        out.print(f"the budget ran out: {len(result.skipped)} layer shape(s) not measured")


def register(group: click.Group) -> None:
    group.add_command(tune_command)
