"""Per-device knob values for the NDRange kernels, kept as data: kernels/tuning.json (shipped)
and the user's own tuning file, written by ``accel tune``, which wins over it.

A table maps a kernel file and a device's tuning key (``Device.tuning_key``: the runtime and,
on the host CPU, its instruction-set level, e.g. ``pocl-cpu/avx2``) to its ``-D`` knobs and
selection rules. A key not listed falls back to the runtime alone (``pocl-cpu``), then to the
file's ``default`` entry; at the first key either table lists, the user's values are taken
over the shipped ones. The user's file is ``ACCEL_TUNING_FILE``, else
``$XDG_CONFIG_HOME/accel/tuning.json`` (default ``~/.config/accel/tuning.json``); ``off``
ignores it. The shipped values are chosen by the kernel benchmarks (benchmarks/README.md)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from accel import kernel_source

USER_FILE_ENV = "ACCEL_TUNING_FILE"


@functools.lru_cache(maxsize=None)
def _table() -> dict:
    return json.loads((kernel_source.kernel_dir() / "tuning.json").read_text())


def user_file() -> Path | None:
    """Where the user's tuning file is (it may not exist), or None when turned off."""
    given = os.environ.get(USER_FILE_ENV)
    if given:
        return None if given == "off" else Path(given).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "accel" / "tuning.json"


@functools.lru_cache(maxsize=None)
def _user_table(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"the tuning file {os.fspath(path)!r} is not valid JSON ({e}); fix "
                         f"or delete it, or set {USER_FILE_ENV}=off") from None
    if not isinstance(table, dict):
        raise ValueError(f"the tuning file {os.fspath(path)!r} must hold a JSON object")
    return table


def reload() -> None:
    """Forget the tables read so far (after a tuning file was written)."""
    _table.cache_clear()
    _user_table.cache_clear()


def knobs(kernel_file: str, tuning_key: str) -> dict[str, int]:
    """The tuned knobs of ``kernel_file`` for a device's tuning key (a copy: callers may
    change it)."""
    shipped = _table().get(kernel_file, {})
    user = _user_table(user_file()).get(kernel_file, {})
    for key in (tuning_key, tuning_key.split("/")[0], "default"):
        if key in shipped or key in user:
            return {**shipped.get(key, {}), **user.get(key, {})}
    return {}
