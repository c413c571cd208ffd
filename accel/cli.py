"""The accel command line: ``accel demo | devices | smoke | fpga estimate``."""

from __future__ import annotations

import argparse
import sys

from .errors import AccelError


def cmd_devices(args: argparse.Namespace) -> int:
    from .devices import devices
    found = devices()
    if not found:
        print("no OpenCL devices found (run tools/setup-opencl.sh)")
        return 1
    for device in found:
        print(device)
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    from .devices import devices, select_device
    from .smoke import run_smoke
    targets = [select_device(args.device)] if args.device else devices()
    if not targets:
        print("no OpenCL devices found (run tools/setup-opencl.sh)")
        return 1
    failures = 0
    for device in targets:
        try:
            r = run_smoke(device)
            status = "ok" if r["ok"] else "WRONG RESULT"
            failures += not r["ok"]
            print(f"{device.index}  {device.short_name:<20} add_sat_i8 x65536: {status}  "
                  f"build {r['build_s']:.2f} s{' (cached)' if r['from_cache'] else ''}, "
                  f"kernel {r['kernel_us']:.1f} us")
        except AccelError as error:
            failures += 1
            print(f"{device.index}  {device.short_name:<20} FAILED: {error}")
    return 1 if failures else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: the devices present, then a model classifying photos on the best one."""
    from .demo import classify_demo
    cmd_devices(args)
    print()
    return classify_demo(args.model, args.device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the main job: ResNet-50 int8 classifying photos on the "
                                       "best device, timed against onnxruntime")
    demo.add_argument("--model", default="resnet50",
                      help="resnet50, resnet152, densenet121 or vgg16")
    demo.add_argument("--device", help="a selector: kind, name substring or P:D")
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("devices", help="list the OpenCL devices present").set_defaults(func=cmd_devices)
    smoke = sub.add_parser("smoke", help="run a small int8 kernel on every device (or one)")
    smoke.add_argument("--device", help="a selector: kind, name substring or P:D")
    smoke.set_defaults(func=cmd_smoke)
    from .fpga.cli import add_subcommand as add_fpga_subcommand
    add_fpga_subcommand(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AccelError as error:
        print(f"accel: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
