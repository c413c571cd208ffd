"""The accel command line: one click group, one module per command group.

Exit codes are stable: 0 ok, 1 the work failed (a build, a launch, a server error), 2 bad usage
or bad input (unknown model or device, missing or corrupt file, bad shapes). Errors print one
line on stderr; ``accel --debug ...`` shows the traceback too.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from ._common import EXIT_FAILURE, EXIT_USAGE, exit_code_for, one_line

# Each module defines ``register(group)``; adding a command group is one line here.
COMMAND_MODULES = (
    "accel.cli.devices",
    "accel.cli.demo",
    "accel.cli.models",
    "accel.cli.convert",
    "accel.cli.compile",
    "accel.cli.classify",
    "accel.cli.run",
    "accel.cli.bench",
    "accel.cli.registry",
    "accel.cli.package",
    "accel.cli.deploy",
    "accel.cli.serve",
    "accel.cli.score",
    "accel.cli.kernel",
    "accel.cli.tune",
    "accel.fpga.cli",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="show tracebacks of errors")
@click.version_option(package_name="accel", prog_name="accel")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """int8 inference of image models on OpenCL devices (FPGAs, CPUs, GPUs)."""
    ctx.obj = {"debug": debug}


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(cli)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"accel: {one_line(message) if isinstance(message, Exception) else message}",
               err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (for tests and ``python -m``)."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    if not debug:  # notices (a dynamic batch fixed, ...) as one line each, like errors
        warnings.showwarning = _one_line_warning
    try:
        # not standalone: click returns a raised Exit's code (or the command's return value)
        result = cli.main(args=argv, prog_name="accel", standalone_mode=False)
        return result if isinstance(result, int) and not isinstance(result, bool) else 0
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.exceptions.Abort:
        click.echo("accel: aborted", err=True)
        return EXIT_FAILURE
    except click.ClickException as error:  # usage errors: click's own message, exit 2
        error.show()
        return error.exit_code
    except KeyboardInterrupt:
        click.echo("accel: interrupted", err=True)
        return EXIT_FAILURE
    except Exception as error:  # noqa: BLE001 - the one place errors become exit codes
        if debug:
            raise
        click.echo(f"accel: {one_line(error)}", err=True)
        return exit_code_for(error)


__all__ = ["cli", "main", "EXIT_FAILURE", "EXIT_USAGE"]
