"""What every command shares: exit codes, one-line errors, the device option, a console."""

from __future__ import annotations

import click

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class InputError(ValueError):
    """Bad input named by the user (a file, a name, a value): exit code 2."""


def exit_code_for(error: BaseException) -> int:
    """2 for bad input (unknown names, missing or malformed files, no such device), else 1."""
    from ..errors import DeviceError
    try:
        from ..backend.compiled import ModelLoadError
    except ImportError:  # pragma: no cover
        ModelLoadError = ()  # noqa: N806
    bad_input = (InputError, ValueError, TypeError, KeyError, FileNotFoundError,
                 IsADirectoryError, NotADirectoryError, PermissionError, ModelLoadError)
    if isinstance(error, DeviceError) and "no OpenCL device matches" in str(error):
        return EXIT_USAGE
    if isinstance(error, bad_input):
        return EXIT_USAGE
    return EXIT_FAILURE


def one_line(error: BaseException) -> str:
    """The error's message on one line (a build log stays in the error object)."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, (KeyError,)) and text.startswith("'"):
        text = text.strip("'")
    line = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) < 1000 else line[:997] + "..."


def console(stderr: bool = False):
    """A rich console (tables, progress bars); plain text when not a terminal."""
    import os

    from rich.console import Console
    out = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal:  # a file or pipe: tables at full width, not cut at 80 columns
        out.width = max(160, int(os.environ.get("COLUMNS", "0") or 0))
    return out


device_option = click.option(
    "--device", "-d", default=None, metavar="SELECTOR",
    help="a device: fpga, fpga-emulator, cpu, gpu, pocl, a name substring or P:D "
         "(default: ACCEL_DEVICE, else the best present)")
