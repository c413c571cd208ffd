"""Activation ranges from representative inputs: min/max, a percentile of each tail, or the
range of least quantization error (MSE)."""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from .params import QParams, dequantize, qparams_from_range, quantize


class MinMaxObserver:
    """The smallest and largest value seen."""

    def __init__(self):
        self.lo, self.hi = np.inf, -np.inf

    def update(self, x: np.ndarray) -> None:
        if x.size:
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))

    def qparams(self) -> QParams:
        if self.lo > self.hi:
            raise ValueError("observer saw no values")
        return qparams_from_range(self.lo, self.hi)


class PercentileObserver:
    """The given percentile of the low and high tails, from a bounded random sample of the
    values (deterministic: seeded), so outliers do not stretch the scale."""

    def __init__(self, percentile: float = 99.99, sample_per_batch: int = 1 << 16, seed: int = 0):
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile
        self.sample_per_batch = sample_per_batch
        self._rng = np.random.default_rng(seed)
        self._samples: list[np.ndarray] = []

    def update(self, x: np.ndarray) -> None:
        flat = np.asarray(x, dtype=np.float32).ravel()
        if flat.size > self.sample_per_batch:
            flat = self._rng.choice(flat, self.sample_per_batch, replace=False)
        if flat.size:
            self._samples.append(flat)

    def qparams(self) -> QParams:
        if not self._samples:
            raise ValueError("observer saw no values")
        values = np.concatenate(self._samples)
        lo = np.percentile(values, 100.0 - self.percentile)
        hi = np.percentile(values, self.percentile)
        return qparams_from_range(lo, hi)


class MSEObserver(PercentileObserver):
    """The range with the least mean squared int8 quantization error over a bounded random
    sample of the values: [lo * t, hi * t] for t on a grid in [MIN_SHRINK, 1], where
    rounding error (wider ranges) and clipping error (narrower ones) balance. Unlike a fixed
    percentile it clips only where the tail is thin enough to pay, which keeps the many
    narrow channels of depthwise layers' inputs apart from a few outliers."""

    MIN_SHRINK = 0.1
    STEPS = 60
    MAX_VALUES = 1 << 18  # values searched over (a seeded subsample of all seen)

    def __init__(self, sample_per_batch: int = 1 << 15, seed: int = 0):
        super().__init__(100.0, sample_per_batch, seed)

    def qparams(self) -> QParams:
        if not self._samples:
            raise ValueError("observer saw no values")
        values = np.concatenate(self._samples)
        if values.size > self.MAX_VALUES:
            values = self._rng.choice(values, self.MAX_VALUES, replace=False)
        values = values.astype(np.float32)
        lo, hi = float(values.min()), float(values.max())
        best, best_error = qparams_from_range(lo, hi), np.inf
        for shrink in np.linspace(1.0, self.MIN_SHRINK, self.STEPS):
            q = qparams_from_range(lo * shrink, hi * shrink)
            error = float(np.mean((dequantize(quantize(values, q), q) - values) ** 2))
            if error < best_error:  # ties keep the wider range
                best, best_error = q, error
        return best


def calibrate(run: Callable[[object], Mapping[str, np.ndarray]], inputs: Iterable,
              observer: Callable[[], object] = MinMaxObserver, progress: bool = True,
              total: int | None = None,
              observer_for: Callable[[str], object] | None = None) -> dict[str, QParams]:
    """Runs ``run(input)`` (float activations by tensor name) over every input and returns the
    QParams of each tensor. ``observer_for(name)``, if given, makes each tensor's observer
    (a choice per tensor) instead of ``observer()``. Shows a progress bar on stderr."""
    make = observer_for or (lambda name: observer())
    from ..progress import track
    observers: dict[str, object] = {}
    count = 0
    for item in track(inputs, "calibrating:", total=total, unit="inputs", enabled=progress):
        for name, value in run(item).items():
            if name not in observers:
                observers[name] = make(name)
            observers[name].update(np.asarray(value))
        count += 1
    if count == 0:
        raise ValueError("calibration needs at least one input")
    return {name: obs.qparams() for name, obs in observers.items()}
