"""Progress bars for long work (calibration, benchmarks, batches of images), drawn by rich
on stderr so that stdout stays the command's result.

    for x in track(inputs, "calibrating:", unit="inputs"):
        ...

One live display at a time: a bar started while another is showing (calibration inside
``accel bench``'s own bar) becomes a second row of the same display. Work that fails (or
stops early) erases its bar, so that an error message stands alone. When stderr is not a
terminal (a log, a pipe) there is no live display: each finished piece of work prints one
line, "calibrating: 4/4 inputs in 5.2 s".
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_active = None  # the rich Progress being shown, if any
_users = 0


def _new_progress():
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Count(ProgressColumn):
        """'3/8 inputs' ('3 inputs' without a total)."""

        def render(self, task):
            of = f"/{int(task.total)}" if task.total is not None else ""
            unit = task.fields.get("unit", "")
            return Text(f"{int(task.completed)}{of}{' ' + unit if unit else ''}")

    return Progress(TextColumn("{task.description}"), Count(), BarColumn(), TimeElapsedColumn(),
                    console=_stderr_console())


def _stderr_console():
    from rich.console import Console
    return Console(stderr=True, highlight=False)


@contextmanager
def _summary_line(description: str, total: int | None, unit: str) -> Iterator:
    """No live display: one line when the work is done, nothing when it fails."""
    done = 0
    start = time.perf_counter()

    def advance(n: int = 1) -> None:
        nonlocal done
        done += n

    yield advance
    of = f"/{total}" if total is not None else ""
    print(f"{description} {done}{of}{' ' + unit if unit else ''} in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


@contextmanager
def task(description: str, *, total: int | None = None, unit: str = "",
         enabled: bool = True) -> Iterator:
    """A progress bar for the duration of the block; yields ``advance(n=1)``."""
    global _active, _users
    if not enabled:
        yield lambda n=1: None
        return
    if not _stderr_console().is_terminal:
        with _summary_line(description, total, unit) as advance:
            yield advance
        return
    with _lock:
        if _active is None:
            _active = _new_progress()
            _active.start()
        _users += 1
        progress = _active
        task_id = progress.add_task(description, total=total, unit=unit)
    failed = True
    try:
        yield lambda n=1: progress.advance(task_id, n)
        failed = False
    finally:
        with _lock:
            _users -= 1
            if failed:  # the error message stands alone: the bar is erased, not printed
                progress.update(task_id, visible=False)
                progress.live.transient = True
            if _users == 0:
                progress.stop()
                _active = None


def track(items: Iterable[T], description: str, *, total: int | None = None, unit: str = "",
          enabled: bool = True) -> Iterator[T]:
    """Yields ``items`` while a bar counts them (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total=total, unit=unit, enabled=enabled) as advance:
        for item in items:
            yield item
            advance()
