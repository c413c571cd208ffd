"""``accel kernel test|bench|asm NAME``: the kernel workbench (accel/workbench.py).

    accel kernel test conv -D TILE_W=5 --device all     # bit-exact against accel.reference
    accel kernel test conv --source my_conv.cl          # a variant in place of kernels/conv.cl
    accel kernel bench conv --shape 1,28,28,128,128,3   # GOPS against the measured int8 peak
    accel kernel asm conv -d pocl                       # vpdpbusd / vpmaddwd / zmm / ymm counts
    accel kernel asm conv -d intel-cpu --target cascadelake   # the VNNI variant, on any host
"""

from __future__ import annotations

import json

import click

from ._common import EXIT_FAILURE

KERNEL_NAMES = ("conv", "winograd", "depthwise", "pool", "eltwise")
SHAPES_HELP = ("conv: N,H,W,CIN,COUT,K[,STRIDE[,PAD[,DILATION]]]; winograd: "
               "N,H,W,CIN,COUT[,PAD]; depthwise: N,H,W,C,K[,STRIDE[,PAD[,DILATION]]]; "
               "pool: N,H,W,C,K[,STRIDE[,PAD]]; eltwise: N,H,W,C")


def _name_argument(f):
    return click.argument("name", type=click.Choice(KERNEL_NAMES))(f)


def _common_options(f):
    f = click.option("--source", "source", type=click.Path(exists=True, dir_okay=False),
                     default=None, metavar="FILE",
                     help="a variant .cl file built in place of the shipped one (its includes "
                          "are looked up next to it, then in kernels/)")(f)
    f = click.option("-D", "--define", "defines", multiple=True, metavar="KNOB=V",
                     help="a -D knob (repeatable), over the device's tuned value")(f)
    return f


def _knobs(defines) -> dict:
    from ..workbench import parse_define
    return dict(parse_define(d) for d in defines)


def _knob_text(knobs: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(knobs.items())) or "(none)"


@click.group("kernel")
def kernel_group() -> None:
    """The kernel workbench: test, time or read the assembly of one kernel."""


@kernel_group.command("test", short_help="check a kernel bit-exact against accel.reference")
@_name_argument
@_common_options
@click.option("--device", "-d", default=None, metavar="SELECTOR",
              help="a device as `accel devices` lists it, or `all` (default: ACCEL_DEVICE, "
                   "else the best present)")
@click.option("--shape", "shapes", multiple=True, metavar="SHAPE",
              help=f"test only these shapes (repeatable); {SHAPES_HELP}")
@click.option("--seed", default=0, show_default=True, help="seed of the random data and shapes")
@click.option("--random", "random_count", default=3, show_default=True,
              help="random shapes besides the edge cases")
def test_command(name, source, defines, device, shapes, seed, random_count) -> None:
    """Run NAME with the given knobs on edge-case and random shapes, bit-exact against
    accel.reference; a wrong output prints the first differing index (exit 1)."""
    from .. import workbench
    from ..workbench import parse_shape
    knobs = _knobs(defines)
    parsed = [parse_shape(s) for s in shapes]
    workbench.split_knobs(workbench.kernel(name), knobs, source)  # bad knobs: before any work
    failed = 0
    for target in workbench.resolve_devices(device):
        click.echo(f"{name} ({workbench.kernel(name).file}"
                   f"{', variant ' + source if source else ''}) on {target.index} "
                   f"{target.short_name}: knobs {_knob_text(knobs)} over the tuned ones")

        def show(result):
            line = f"  {result.status:<4}  {result.name:<24} {result.shape}"
            click.echo(line + (f"\n        {result.detail}" if result.detail else ""))

        report = workbench.test(name, target, knobs, source, parsed, seed, random_count,
                                on_result=show)
        skipped = len(report.results) - len(report.passed) - len(report.failed)
        click.echo(f"  {len(report.passed)} passed, {len(report.failed)} failed, "
                   f"{skipped} skipped")
        if not report.ok:
            failed += 1
    if failed:
        raise click.exceptions.Exit(EXIT_FAILURE)


@kernel_group.command("bench", short_help="time a kernel against the host's int8 peak")
@_name_argument
@_common_options
@click.option("--device", "-d", default=None, metavar="SELECTOR",
              help="a device (default: ACCEL_DEVICE, else the best present)")
@click.option("--shape", default=None, metavar="SHAPE",
              help=f"the layer to time (default: a ResNet-50 layer); {SHAPES_HELP}")
@click.option("--rounds", default=20, show_default=True, help="timed launches")
@click.option("--no-peak", is_flag=True, help="do not measure the host's int8 peak")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def bench_command(name, source, defines, device, shape, rounds, no_peak, as_json) -> None:
    """Time NAME (profiling events, best of --rounds) and compare it with the host's measured
    int8 peak (benchmarks/int8_peak.c, built with gcc -march=native)."""
    from .. import workbench
    result = workbench.bench(name, device, _knobs(defines), source,
                             workbench.parse_shape(shape) if shape else None, rounds,
                             peak=not no_peak)
    fraction = result.fraction_of_peak
    if as_json:
        click.echo(json.dumps(dict(
            kernel=name, device=result.device.index, device_name=result.device.short_name,
            layer=result.description, knobs=result.knobs, best_ms=result.best_ms,
            median_ms=result.median_ms, gops=result.gops, gbytes_per_s=result.gbytes_per_s,
            peak_gops=result.peak and result.peak["peak"], fraction_of_peak=fraction)))
        return
    click.echo(f"{name} on {result.device.index} {result.device.short_name}: "
               f"{result.description}, knobs {_knob_text(result.knobs)}")
    click.echo(f"  best {result.best_ms:.3f} ms, median {result.median_ms:.3f} ms: "
               f"{result.gops:.1f} GOPS, {result.gbytes_per_s:.1f} GB/s")
    if result.peak:
        share = f": {100 * fraction:.1f}% of it" if fraction is not None else ""
        click.echo(f"  host int8 peak {result.peak['peak']:.0f} GOPS on {result.peak['cores']} "
                   f"cores ({result.peak['instruction']}){share}")
    elif not no_peak:
        click.echo("  host int8 peak unknown (needs gcc and benchmarks/int8_peak.c)")


@kernel_group.command("asm", short_help="count the vector instructions of a kernel's code")
@_name_argument
@_common_options
@click.option("--device", "-d", default=None, metavar="SELECTOR",
              help="a CPU runtime: PoCL, Intel's CPU runtime or the FPGA emulator "
                   "(default: ACCEL_DEVICE, else the best present)")
@click.option("--shape", default=None, metavar="SHAPE",
              help=f"the layer to build for (default: a small one with the tuned knobs as "
                   f"they are); {SHAPES_HELP}")
@click.option("--target", default=None, metavar="CPU",
              help="Intel's CPU runtime only: compile for this CPU instead of the host "
                   "(core-avx2, skx, cascadelake, icelake-server; cascadelake shows conv's "
                   "VNNI variant), built but not run")
@click.option("--keep", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="copy the assembly into DIR")
@click.option("--json", "as_json", is_flag=True, help="print the counts as JSON")
def asm_command(name, source, defines, device, shape, target, keep, as_json) -> None:
    """Build NAME with the device's tuned knobs (and -D ones), read the code the runtime
    generates and count vpdpbusd, vpmaddwd, ... and zmm/ymm/xmm use."""
    from .. import workbench
    report = workbench.asm(name, device, _knobs(defines), source, keep,
                           shape=workbench.parse_shape(shape) if shape else None,
                           target=target)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    built_for = f", built for {report.target} (not run)" if report.target else ""
    click.echo(f"{name} on {report.device.index} {report.device.short_name}{built_for}: "
               f"knobs {_knob_text(report.knobs)}")
    if report.variant is not None:
        click.echo(f"  pair-MAC variant {report.variant} "
                   f"({workbench.PAIR_MAC_VARIANTS.get(report.variant, 'unknown')})")
    if report.quad_variant is not None:
        click.echo(f"  quad-MAC (VNNI) variant {report.quad_variant} "
                   f"({workbench.QUAD_MAC_VARIANTS.get(report.quad_variant, 'unknown')})")
    for mnemonic in workbench.MNEMONICS:
        per_width = report.counts.get(mnemonic, {})
        detail = ", ".join(f"{w} {n}" for w, n in sorted(per_width.items()))
        click.echo(f"  {mnemonic:<11} {report.count(mnemonic):>6}"
                   + (f"   ({detail})" if detail else ""))
    click.echo("  instructions using zmm {zmm}, ymm {ymm}, xmm {xmm} (widest register), "
               "of {total}".format(total=report.instructions, **report.widths))
    for path in report.files:
        click.echo(f"  code: {path}" + ("" if keep else " (deleted; --keep DIR keeps it)"))


def register(group: click.Group) -> None:
    group.add_command(kernel_group)
