"""Keeps the OpenCL compilers' chatter out of the user's terminal.

PoCL's in-process clang writes its diagnostics summary ("8 warnings generated.") straight to
file descriptor 2 during clBuildProgram; the warnings themselves are in the program's build
log, which a BuildError carries. So while a program builds, fd 2 points at a temporary
file; afterwards the summary lines are dropped and anything else that was written there
(another thread's output, a runtime's real message) is passed on to the real stderr.
``ACCEL_BUILD_OUTPUT=show`` leaves fd 2 alone.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# clang's summary line; the diagnostics it counts are in the build log.
CHATTER = re.compile(rb"^\d+ (?:warnings?|errors?)(?: and \d+ errors?)? generated\.\r?\n?",
                     re.MULTILINE)
_lock = threading.RLock()  # fd 2 is process-wide: one redirection at a time


def strip_chatter(text: bytes) -> bytes:
    return CHATTER.sub(b"", text)


@contextmanager
def quiet_compiler() -> Iterator[None]:
    """fd 2 captured for the block; compiler summary lines dropped, the rest re-emitted."""
    if os.environ.get("ACCEL_BUILD_OUTPUT") == "show":
        yield
        return
    with _lock:
        for stream in (sys.stderr, sys.__stderr__):
            try:
                stream.flush()  # Python's own buffered text goes out before the switch
            except (AttributeError, OSError, ValueError):
                pass
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (a daemon): nothing to keep quiet
            yield
            return
        try:
            with tempfile.TemporaryFile() as capture:
                os.dup2(capture.fileno(), 2)
                try:
                    yield
                finally:
                    os.dup2(saved, 2)
                    capture.seek(0)
                    rest = strip_chatter(capture.read())
                    if rest:
                        os.write(2, rest)
        finally:
            os.close(saved)
