"""``accel bench MODEL`` (latency and throughput against onnxruntime) and ``accel profile
MODEL`` (per-layer device times). The work is in accel.bench."""

from __future__ import annotations

import json

import click

from ._common import console, device_option

MODEL_HELP = ("MODEL: a zoo name (resnet50, ...), an .onnx file (both compiled first, "
              "calibrated on the bundled photos) or a compiled model directory.")


def _print_layers(layers, plot: str | None, title: str) -> None:
    from .. import bench
    console().print(bench.layer_table(layers, title))
    if plot:
        click.echo(f"wrote {bench.plot_layers(layers, plot, title)}")


@click.command("bench")
@click.argument("model")
@device_option
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="threads for onnxruntime and the OpenCL CPU runtimes (default: every core)")
@click.option("--iterations", "-n", type=click.IntRange(min=1), default=100, show_default=True,
              help="timed runs of each runner")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="untimed runs of each runner first")
@click.option("--no-onnxruntime", is_flag=True, help="time accel alone")
@click.option("--per-layer", is_flag=True, help="also print the per-layer device times")
@click.option("--plot", metavar="OUT.png", type=click.Path(dir_okay=False),
              help="draw the per-layer device times as a bar chart (matplotlib)")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
def bench_command(model, device, threads, iterations, warmup, no_onnxruntime, per_layer, plot,
                  as_json) -> None:
    """Batch latency percentiles (p50/p90/p99) and throughput of MODEL compiled to int8 on a
    device, next to onnxruntime fp32 and onnxruntime int8 (its own quantize_static QDQ of the
    same model, calibrated on the same images) with the same threads, taking turns in the
    same run. """
    from .. import bench
    if threads:  # before the first OpenCL call of this process
        bench.set_device_threads(threads)
    result = bench.benchmark(model, device=device, threads=threads, iterations=iterations,
                             warmup=warmup, onnxruntime=not no_onnxruntime,
                             per_layer=per_layer or bool(plot), progress=not as_json)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        if plot:
            bench.plot_layers(result.layers, plot, f"{result.model} on {result.device}")
        return
    out = console()
    compiled = f", compiled in {result.compile_s:.1f} s" if result.compile_s is not None else ""
    out.print(f"{result.model} on {result.device}{compiled}", markup=False)
    out.print(result.table())
    for note in result.notes:
        out.print(f"note: {note}", markup=False)
    if result.layers is not None:
        _print_layers(result.layers, plot, f"{result.model} per-layer device time")


bench_command.help += "\n\n" + MODEL_HELP


@click.command("profile")
@click.argument("model")
@device_option
@click.option("--repeat", type=click.IntRange(min=1), default=10, show_default=True,
              help="runs to average each layer's time over")
@click.option("--plot", metavar="OUT.png", type=click.Path(dir_okay=False),
              help="draw the per-layer times as a bar chart (matplotlib)")
@click.option("--json", "as_json", is_flag=True, help="print the layers as JSON")
def profile_command(model, device, repeat, plot, as_json) -> None:
    """Per-layer device times of MODEL compiled to int8 (OpenCL profiling events, averaged
    over --repeat runs), in execution order."""
    from .. import bench
    compiled, layers = bench.profile(model, device=device, repeat=repeat, progress=not as_json)
    title = f"{compiled.name} on {compiled.device.short_name}"
    if as_json:
        click.echo(json.dumps([dict(name=t.name, op=t.op, ms=t.ms) for t in layers], indent=2))
        if plot:
            bench.plot_layers(layers, plot, title)
        return
    _print_layers(layers, plot, title)


profile_command.help += "\n\n" + MODEL_HELP


def register(group: click.Group) -> None:
    group.add_command(bench_command)
    group.add_command(profile_command)
