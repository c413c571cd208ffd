"""Errors raised by accel. The C++ runtime raises these classes, chosen by the CL error code."""

from __future__ import annotations


class AccelError(RuntimeError):
    """Base class. ``code`` is the OpenCL error code and ``routine`` the failing call, if any."""

    def __init__(self, message: str, *, code: int | None = None, routine: str | None = None,
                 log: str | None = None):
        super().__init__(message)
        self.code = code
        self.routine = routine
        self.log = log


class DeviceError(AccelError):
    """No such device, or the device could not be opened."""


class BuildError(AccelError):
    """A program failed to build; ``log`` holds the compiler's build log."""


class LaunchError(AccelError):
    """A kernel could not be enqueued or failed while running."""


class DeviceMemoryError(AccelError):
    """A device buffer could not be allocated, or a copy did not match its size."""
