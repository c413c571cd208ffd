"""``accel devices`` and ``accel smoke``: what OpenCL devices exist, and do they compute."""

from __future__ import annotations

import click

from ._common import EXIT_FAILURE, device_option


@click.command("devices")
def devices_command() -> int:
    """List the OpenCL devices present."""
    from ..devices import devices
    found = devices()
    if not found:
        click.echo("no OpenCL devices found (run tools/setup-opencl.sh)", err=True)
        raise click.exceptions.Exit(EXIT_FAILURE)
    for device in found:
        click.echo(str(device))


@click.command("smoke")
@device_option
def smoke_command(device: str | None) -> None:
    """Run a small int8 kernel on every device (or one) and check it against numpy."""
    from ..devices import devices, select_device
    from ..errors import AccelError
    from ..smoke import run_smoke
    targets = [select_device(device)] if device else devices()
    if not targets:
        click.echo("no OpenCL devices found (run tools/setup-opencl.sh)", err=True)
        raise click.exceptions.Exit(EXIT_FAILURE)
    failures = 0
    for target in targets:
        try:
            r = run_smoke(target)
            status = "ok" if r["ok"] else "WRONG RESULT"
            failures += not r["ok"]
            click.echo(f"{target.index}  {target.short_name:<20} add_sat_i8 x65536: {status}  "
                       f"build {r['build_s']:.2f} s{' (cached)' if r['from_cache'] else ''}, "
                       f"kernel {r['kernel_us']:.1f} us")
        except AccelError as error:
            failures += 1
            click.echo(f"{target.index}  {target.short_name:<20} FAILED: {error}")
    if failures:
        raise click.exceptions.Exit(EXIT_FAILURE)


def register(group: click.Group) -> None:
    group.add_command(devices_command)
    group.add_command(smoke_command)
