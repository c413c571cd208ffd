"""``accel fpga estimate MODEL``: the FPGA model's per-layer table and total.

Wired into accel/cli.py by ``add_subcommand(subparsers)``.
"""

from __future__ import annotations

import argparse

from .boards import BOARDS


def cmd_estimate(args: argparse.Namespace) -> int:
    from .estimate import DEFAULT_LANE_NUM, DEFAULT_VEC_SIZE, choose_knobs, estimate, load_model
    try:
        model = load_model(args.model)
        if args.choose:
            choice = choose_knobs(model, args.board)
            print(choice.summary())
            print()
            result = choice.estimate
        else:
            result = estimate(model, args.board,
                              vec_size=args.vec_size or DEFAULT_VEC_SIZE,
                              lane_num=args.lane_num or DEFAULT_LANE_NUM,
                              fmax_mhz=args.fmax_mhz, batch=args.batch)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"accel fpga estimate: {error}")
        return 2
    print(result.table())
    if args.plot:
        from .plot import plot_layers
        message = plot_layers(result, args.plot)
        print(message)
    return 0 if result.fits else 1


def add_subcommand(subparsers) -> argparse.ArgumentParser:
    """Add ``fpga estimate`` to the accel CLI's subparsers."""
    fpga = subparsers.add_parser("fpga", help="FPGA tools: the Arria 10 performance model")
    sub = fpga.add_subparsers(dest="fpga_command", required=True)
    est = sub.add_parser("estimate", help="modelled per-layer FPGA latency and resources",
                         description="Per-layer cycles, time (compute- or DDR-bound), total "
                                     "batch-1 latency and DSP/M20K/ALM use against the board. "
                                     "Exit status 1 when the configuration does not fit.")
    est.add_argument("model", help="a model builder name (resnet50, vgg16, ...), a calibration "
                                   "net (alexnet, vgg16-pipecnn) or an .onnx path")
    est.add_argument("--board", default="a10gx1150", choices=sorted(BOARDS))
    est.add_argument("--vec-size", type=int, default=None, help="input channels per cycle")
    est.add_argument("--lane-num", type=int, default=None, help="output channels per cycle")
    est.add_argument("--fmax-mhz", type=float, default=None,
                     help="kernel clock (default: what the model expects the size to reach)")
    est.add_argument("--batch", type=int, default=1)
    est.add_argument("--choose", action="store_true",
                     help="search VEC_SIZE x LANE_NUM x fmax for the lowest latency that fits")
    est.add_argument("--plot", metavar="OUT.png", help="a per-layer bar chart (matplotlib)")
    est.set_defaults(func=cmd_estimate)
    return est


def main(argv: list[str] | None = None) -> int:
    """Standalone entry for testing: ``python -m accel.fpga.cli estimate resnet50``."""
    parser = argparse.ArgumentParser(prog="accel")
    add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fpga"] + list(argv or []))
    return args.func(args)


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
