"""One way to turn an op module's ValueError (bad parameters) into a CompileError that
names the layer."""

from __future__ import annotations

from contextlib import contextmanager

from ..compiler.errors import CompileError


@contextmanager
def compile_errors(what: str, types: tuple[type[BaseException], ...] = (ValueError,)):
    """Re-raise ``types`` raised inside as CompileError(f"{what}: {error}"); a CompileError
    passes through as it is."""
    try:
        yield
    except CompileError:
        raise
    except types as e:
        raise CompileError(f"{what}: {e}") from e
