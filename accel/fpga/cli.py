"""``accel fpga estimate MODEL`` (the FPGA model's per-layer table and total) and
``accel fpga report`` (the design's resources by component against the board).

Registered in the accel CLI by ``register(group)``.
"""

from __future__ import annotations

import click

from .boards import BOARDS


@click.group("fpga")
def fpga_group() -> None:
    """FPGA tools: the Arria 10 performance and resource model."""


@fpga_group.command("estimate")
@click.argument("model")
@click.option("--board", default="a10gx1150", show_default=True,
              type=click.Choice(sorted(BOARDS)))
@click.option("--vec-size", type=int, default=None, help="input channels per cycle")
@click.option("--lane-num", type=int, default=None, help="output channels per cycle")
@click.option("--fmax-mhz", type=float, default=None,
              help="kernel clock (default: what the model expects the size to reach)")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--choose", is_flag=True,
              help="search VEC_SIZE x LANE_NUM x fmax for the lowest latency that fits")
@click.option("--plot", metavar="OUT.png",
              help="per-layer time: compute, memory beyond compute, stalls, overhead (matplotlib)")
@click.option("--qdq", is_flag=True,
              help="the model as a QDQ model: float32 requantize, residual adds unfused")
def estimate_command(model, board, vec_size, lane_num, fmax_mhz, batch, choose, plot,
                     qdq) -> None:
    """Per-layer cycles, time (compute- or DDR-bound), total batch-1 latency and DSP/M20K/ALM
    use against the board, for MODEL: a zoo name (resnet50, vgg16, ...), a calibration net
    (alexnet, vgg16-pipecnn) or an .onnx path. Exit status 1 when it does not fit."""
    from .estimate import DEFAULT_LANE_NUM, DEFAULT_VEC_SIZE, choose_knobs, estimate, load_model
    loaded = load_model(model)
    requant = "float32" if qdq else "fixed"
    if choose:
        choice = choose_knobs(loaded, board, requant=requant)
        click.echo(choice.summary())
        click.echo()
        result = choice.estimate
    else:
        result = estimate(loaded, board, vec_size=vec_size or DEFAULT_VEC_SIZE,
                          lane_num=lane_num or DEFAULT_LANE_NUM, fmax_mhz=fmax_mhz, batch=batch,
                          requant=requant)
    click.echo(result.table())
    if plot:
        from .plot import plot_layers
        click.echo(plot_layers(result, plot))
    if not result.fits:
        raise click.exceptions.Exit(1)


@fpga_group.command("report")
@click.option("--board", default="a10gx1150", show_default=True,
              type=click.Choice(sorted(BOARDS)))
@click.option("--vec-size", type=int, default=None, help="input channels per cycle")
@click.option("--lane-num", type=int, default=None, help="output channels per cycle")
@click.option("--model", default=None,
              help="compile in only the modes this model needs (default: every mode)")
@click.option("--qdq", is_flag=True, help="with --model: the model is a QDQ (float32) model")
def report_command(board, vec_size, lane_num, model, qdq) -> None:
    """The bitstream's resources by component (MAC array, epilogue and pool modes, buffers,
    channels, load/store units, control, the board's static region) against the board, and
    its -D options. Exit status 1 when it does not fit."""
    from .estimate import (ACCEL_DESIGN, DEFAULT_LANE_NUM, DEFAULT_VEC_SIZE, design_record,
                           load_model, model_modes, resources)
    vec, lane = vec_size or DEFAULT_VEC_SIZE, lane_num or DEFAULT_LANE_NUM
    modes = eltwise = None
    if model:
        layers = load_model(model).layers
        modes = model_modes(layers, "float32" if qdq else "fixed")
        if qdq and any(layer.residual for layer in layers):  # unfused: NDRange adds
            eltwise = "float32"
    record = design_record(vec, lane, None, modes)
    res = resources(board, vec, lane, ACCEL_DESIGN, record, eltwise=eltwise)
    click.echo(f"design: {record.describe()}")
    click.echo(f"board: {board}")
    click.echo(res.report())
    defines = " ".join(f"-D{k}={v}" for k, v in record.defines().items())
    click.echo(f"aoc kernels/fpga_bitstream.cl {defines}")
    if not res.fits:
        raise click.exceptions.Exit(1)


def register(group: click.Group) -> None:
    group.add_command(fpga_group)


def main(argv: list[str] | None = None) -> int:
    """``accel fpga ...`` with ``argv`` after ``fpga`` (tests, ``python -m accel.fpga.cli``)."""
    from ..cli import main as accel_main
    return accel_main(["fpga"] + list(argv or []))


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
