"""Recording the OpenCL programs accel builds, for tests that check the exact source and
options (accel.kernels.source/options, -D knobs reaching the compiler)."""

from __future__ import annotations

import accel.runtime


def recorded_builds(monkeypatch) -> list:
    """(source, options) of every program accel builds from source while ``monkeypatch`` is
    active; binaries load as before."""
    built = []
    real = accel.runtime.Program

    class Recording:
        @staticmethod
        def from_source(context, source, options, cache_dir):
            built.append((source, options))
            return real.from_source(context, source, options, cache_dir)

        from_binary = real.from_binary

    monkeypatch.setattr(accel.runtime, "Program", Recording)
    return built
