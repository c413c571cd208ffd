"""The registry's errors: each carries a one-line message meant for the user."""

from __future__ import annotations

from ..errors import AccelError


class RegistryError(AccelError):
    """Something about the registry went wrong (exit code 1 on the command line)."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise print their repr
        return str(self.args[0]) if self.args else type(self).__name__


class ModelNotFoundError(RegistryError, KeyError):
    """No registered model matches a reference (bad input: exit code 2)."""


class InvalidReferenceError(RegistryError, ValueError):
    """A malformed model name, reference or tag, or not a compiled model (exit code 2)."""


class ReferencedError(RegistryError, ValueError):
    """Deleting a model that a package or a deployment still uses (exit code 2)."""


class DestinationExistsError(RegistryError, ValueError):
    """An output directory that exists and is not empty (exit code 2)."""


class CorruptBlobError(RegistryError):
    """A stored blob is missing or does not hash to its recorded checksum."""
