"""Every knob value and selection rule of the NDRange kernels, kept as data and read only
here: kernels/tuning.json (shipped) and the user's own tuning file, written by
``accel tune``, which wins over it.

A table maps a kernel file and a device's tuning key (``Device.tuning_key``: the runtime
and, on the host CPU, its instruction-set level, e.g. ``pocl-cpu/avx2``) to an entry of
``-D`` knobs and selection rules. Over the file's ``default`` entry come the runtime's
(``pocl-cpu``), then the exact key's (``pocl-cpu/avx2``): a more specific key wins, and a
key neither table lists adds nothing (the shipped table lists AVX2 keys only, so AVX-512
hosts get the runtime-wide values, and a user's entry at their exact key changes only what
it names). An entry's ``shapes`` maps a layer shape class (``conv_shape_class``) to values
laid over the entry for layers of that class (``accel tune`` writes them). At each key the
user's entry and its shape entries are laid over the shipped ones, so the user's file wins
as a whole there (a device value there wins over a shipped shape entry). Keys starting
with ``_`` (``_provenance``) are notes.

The tables' ``_knobs`` and ``_rules`` declare, once, each file's knobs (passed to the
kernel as -D) and selection rules (read by the compiler: Winograd on/off, the accumulator
budget, ...) with their constraints (``min``, ``max``, ``in``, ``divides``); every entry is
checked against them when a table is read, and the kernels' ``#error`` guards mirror them
(tests/test_tune.py builds each violation).

The user's file is ``ACCEL_TUNING_FILE``, else ``$XDG_CONFIG_HOME/accel/tuning.json``
(default ``~/.config/accel/tuning.json``); ``off`` ignores it."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from pathlib import Path

from accel import kernel_source

USER_FILE_ENV = "ACCEL_TUNING_FILE"
SHAPES = "shapes"  # an entry's per-shape-class entries
CONSTRAINTS = ("min", "max", "in", "divides")


@functools.lru_cache(maxsize=None)
def _table() -> dict:
    path = kernel_source.kernel_dir() / "tuning.json"
    table = json.loads(path.read_text())
    check_table(table, table, str(path))
    return table


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
    where = os.fspath(path)
    try:
        table = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"the tuning file {where!r} is not valid JSON ({e}); fix "
                         f"or delete it, or set {USER_FILE_ENV}=off") from None
    if not isinstance(table, dict):
        raise ValueError(f"the tuning file {where!r} must hold a JSON object")
    try:
        check_table(table, _table(), where)
    except ValueError as e:
        raise ValueError(f"{e}; fix or delete it, or set {USER_FILE_ENV}=off") from None
    return table


def read_user_file(path: Path) -> dict:
    """A user tuning file's table, checked ({} when there is none); ValueError names the
    file and what is wrong with it."""
    return _user_table(Path(path))


def reload() -> None:
    """Forget the tables read so far (after a tuning file was written)."""
    _table.cache_clear()
    _user_table.cache_clear()


_shipped_only = threading.local()


@contextlib.contextmanager
def shipped_only():
    """Within the block (in this thread), lookups ignore the user's file: the tuner measures
    candidates against the shipped values, whatever an earlier run wrote."""
    before = getattr(_shipped_only, "on", False)
    _shipped_only.on = True
    try:
        yield
    finally:
        _shipped_only.on = before


def _user() -> dict:
    return {} if getattr(_shipped_only, "on", False) else _user_table(user_file())


# --- the declared knobs and rules -----------------------------------------------------------

def declared(kernel_file: str, section: str = "_knobs") -> dict:
    """The constraints of ``kernel_file``'s knobs (``_knobs``) or rules (``_rules``)."""
    return _table().get(section, {}).get(kernel_file, {})


def check_value(name: str, value, constraint: dict) -> int:
    """``value`` as an int, or ValueError saying which declared constraint it breaks."""
    if isinstance(value, bool) or not isinstance(value, int) and not _is_numpy_int(value):
        raise ValueError(f"knob {name} must be an integer, got {value!r}")
    value = int(value)
    low, high = constraint.get("min"), constraint.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            raise ValueError(f"{name}={value} must be at least {low}")
        raise ValueError(f"{name}={value} must be in {low}..{high}" if low is not None
                         else f"{name}={value} must be at most {high}")
    choices = constraint.get("in")
    if choices is not None and value not in choices:
        raise ValueError(f"{name}={value} must be {choices[0]} or {choices[1]}"
                         if len(choices) == 2 else
                         f"{name}={value} must be one of ({', '.join(map(str, choices))})")
    if "divides" in constraint and (value <= 0 or constraint["divides"] % value):
        raise ValueError(f"{name}={value} must be a positive integer dividing "
                         f"{constraint['divides']}")
    return value


def _is_numpy_int(value) -> bool:
    import numpy as np
    return isinstance(value, np.integer)


def check(kernel_file: str, values: dict, *, rules: bool = False) -> dict:
    """``values`` checked against ``kernel_file``'s declared knobs (and its rules where
    ``rules``): known names only, each within its constraints; the values as ints."""
    known = {**declared(kernel_file), **(declared(kernel_file, "_rules") if rules else {})}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown knob(s) {', '.join(unknown)} for {kernel_file}; "
                         f"its knobs are {', '.join(sorted(known))}")
    return {name: check_value(name, value, known[name]) for name, value in values.items()}


def check_table(table: dict, declaring: dict, where: str) -> None:
    """ValueError naming the file, kernel, key and knob of the first entry of ``table`` that
    breaks the constraints ``declaring`` (the shipped table) declares."""
    for section in ("_knobs", "_rules"):
        for kernel_file, knobs in declaring.get(section, {}).items():
            for name, constraint in knobs.items():
                bad = set(constraint) - set(CONSTRAINTS) - {"why"}
                if bad:
                    raise ValueError(f"{where}: {section} {kernel_file} {name}: unknown "
                                     f"constraint(s) {', '.join(sorted(bad))}")
    for kernel_file, entries in table.items():
        if kernel_file.startswith("_"):
            continue
        known = {**declaring.get("_knobs", {}).get(kernel_file, {}),
                 **declaring.get("_rules", {}).get(kernel_file, {})}
        if not known:
            raise ValueError(f"the tuning file {where!r} has entries for {kernel_file!r}, "
                             f"which has no declared knobs")
        if not isinstance(entries, dict):
            raise ValueError(f"the tuning file {where!r}: {kernel_file} must map tuning keys "
                             f"to entries")
        for key, entry in entries.items():
            if key.startswith("_"):
                continue
            shapes = entry.get(SHAPES, {}) if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or not isinstance(shapes, dict):
                raise ValueError(f"the tuning file {where!r}: {kernel_file} {key} must be an "
                                 f"object of knobs")
            for label, values in [(key, _values(entry))] + \
                    [(f"{key} {SHAPES} {c}", _values(v) if isinstance(v, dict) else None)
                     for c, v in shapes.items()]:
                if values is None:
                    raise ValueError(f"the tuning file {where!r}: {kernel_file} {label} must "
                                     f"be an object of knobs")
                unknown = sorted(set(values) - set(known))
                try:
                    if unknown:
                        raise ValueError(f"unknown knob(s) {', '.join(unknown)}; its knobs "
                                         f"are {', '.join(sorted(known))}")
                    for name, value in values.items():
                        check_value(name, value, known[name])
                except ValueError as e:
                    raise ValueError(f"the tuning file {where!r}: {kernel_file} {label}: "
                                     f"{e}") from None


def _values(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if not k.startswith("_") and k != SHAPES}


# --- lookups --------------------------------------------------------------------------------

def lookup_keys(tuning_key: str) -> tuple[str, ...]:
    """The keys a device's entry is looked up at, most specific first."""
    runtime = tuning_key.split("/")[0]
    return tuple(dict.fromkeys((tuning_key, runtime)))


def _layers(kernel_file: str, tuning_key: str, shape: str | None) -> list[tuple[dict, bool]]:
    """The values laid over one another for a device (and a layer shape class), least
    specific first, each with whether it is a shape class's own entry: the ``default``
    entries, then at each lookup key from the runtime's to the exact one, the shipped entry
    and its shape's, then the user's entry and its shape's. A more specific key wins, and at
    one key the user's file wins; a key neither table lists adds nothing (an AVX-512 host,
    which the shipped table does not list, keeps the runtime-wide values under a user's
    entry for its exact key)."""
    shipped = _table().get(kernel_file, {})
    user = _user().get(kernel_file, {})
    found = [(_values(shipped.get("default", {})), False),
             (_values(user.get("default", {})), False)]
    for key in reversed(lookup_keys(tuning_key)):
        for table in (shipped, user):
            found.append((_values(table.get(key, {})), False))
            if shape is not None:
                found.append((_values(table.get(key, {}).get(SHAPES, {}).get(shape, {})), True))
    return found


def entry(kernel_file: str, tuning_key: str, shape: str | None = None) -> dict:
    """Knobs and rules of ``kernel_file`` for a device (and a layer shape class): the values
    of _layers laid over one another (a new dict: callers may change it)."""
    chosen = {}
    for values, _ in _layers(kernel_file, tuning_key, shape):
        chosen.update(values)
    return chosen


def from_shape_entry(kernel_file: str, name: str, tuning_key: str, shape: str) -> bool:
    """Whether a layer of this shape class takes ``name`` from a shape class's own entry
    (e.g. the Winograd selection ``accel tune`` measured for it) rather than a device's."""
    decided = False
    for values, is_shape in _layers(kernel_file, tuning_key, shape):
        if name in values:
            decided = is_shape
    return decided


def knobs(kernel_file: str, tuning_key: str, shape: str | None = None) -> dict[str, int]:
    """The tuned -D knobs of ``kernel_file`` for a device's tuning key (and a layer shape
    class), its selection rules left out (a copy: callers may change it)."""
    rule_names = declared(kernel_file, "_rules")
    return {k: v for k, v in entry(kernel_file, tuning_key, shape).items()
            if k not in rule_names}


def rules(kernel_file: str, tuning_key: str = "default",
          shape: str | None = None) -> dict[str, int]:
    """The selection rules of ``kernel_file`` for a device's tuning key (the compiler's
    choices: Winograd on/off and its threshold, the accumulator budget, ...), with a layer
    shape class's own where given."""
    rule_names = declared(kernel_file, "_rules")
    return {k: v for k, v in entry(kernel_file, tuning_key, shape).items() if k in rule_names}


def rule(kernel_file: str, name: str, tuning_key: str = "default") -> int:
    """One selection rule; KeyError names it when the table lacks it."""
    found = rules(kernel_file, tuning_key)
    if name not in found:
        raise KeyError(f"kernels/tuning.json has no rule {name} for {kernel_file}")
    return found[name]


def conv_shape_class(kernel_h: int, kernel_w: int, stride: tuple[int, int], in_channels: int,
                     out_channels: int, in_height: int, in_width: int) -> str:
    """The shape class a conv layer's per-shape tuning is kept under: kernel size, stride,
    channels, and the input's larger side rounded up to a power of two
    (``k3x3 s1 c64-64 hw64`` for ResNet-50's 56x56 3x3 layers)."""
    side = max(in_height, in_width)
    bucket = 1 << max(0, (side - 1).bit_length())
    sh, sw = stride
    s = f"{sh}" if sh == sw else f"{sh}x{sw}"
    return f"k{kernel_h}x{kernel_w} s{s} c{in_channels}-{out_channels} hw{bucket}"
