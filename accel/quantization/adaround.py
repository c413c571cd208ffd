"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training
Quantization"): each int8 weight is rounded down or up, whichever of the two the layer's
output needs, instead of to the nearest step. The choice is learnt per layer by minimising
the reconstruction error of the layer's output on calibration inputs, with a soft rounding
variable pushed to 0 or 1 by an annealed regulariser.

The weights' format is unchanged: the same per-channel scales (quantize_weights_per_channel's),
int8 values within one step of nearest rounding, so kernels and bit-exactness are untouched.

Here the reconstruction error is a quadratic form. With x_f a layer input patch of the float
network, x_q the same patch in the int8 network (every earlier layer's rounding included:
"asymmetric" reconstruction, section 5 of the paper) and W, W~ the float and rounded weights,
the error after bias correction (which removes its mean) is

    E || W~ (x_q - E x_q) - W (x_f - E x_f) ||^2
        = tr(W~ Cqq W~^T) - 2 tr(W~ Cqf^T W^T) + tr(W Cff W^T)

so only the covariances of the patches are needed (gathered once, over every calibration
pixel), and each optimisation step costs a (channels x K x K) product, not a pass over the
data. It is the error before the activation (the paper's pre-activation variant).

    stats = PatchStatistics.for_conv(weight.shape, strides, pads, dilations, groups)
    stats.add(x_float, x_int8_simulated)      # NCHW, once per calibration input
    q, scales, info = adaround(weight, stats, iterations=500)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..numerics import WEIGHT_MAX
from .params import quantize_weights_per_channel

ZETA, GAMMA = 1.1, -0.1  # the stretched sigmoid's ends (paper, eq. 23)
ITERATIONS = 300  # per layer (the paper: 10k steps of sampled mini-batches)
LEARNING_RATE = 0.05  # Adam, on the rounding variables
REG_WEIGHT = 0.01  # lambda (paper, section 5)
WARMUP = 0.2  # the first 20% of the steps without the regulariser
BETA = (20.0, 2.0)  # the regulariser's exponent, annealed linearly after the warm-up
TAIL = 1e-3  # the share of the input covariance's trace modelled as isotropic (speed)


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("weight_rounding=\"adaround\" or \"block\" needs PyTorch (the "
                          "[pretrained] extra: pip install 'accel[pretrained]')") from None
    return torch


class PatchStatistics:
    """Sums of one layer's input patches over the calibration inputs, in float64, per group:
    the means and (cross) second moments that the quadratic error needs. A Conv's patch is
    its receptive field (C_in/groups x kh x kw, torch unfold's order, which is the weight's
    own); a Dense's is its flattened input."""

    def __init__(self, groups: int, patch: int, conv: dict | None):
        self.groups, self.patch, self.conv = groups, patch, conv
        shape = (groups, patch)
        self.n = 0
        self.sum_q, self.sum_f = np.zeros(shape), np.zeros(shape)
        self.qq = np.zeros(shape + (patch,))
        self.qf = np.zeros(shape + (patch,))
        self.ff = np.zeros(shape + (patch,))

    @classmethod
    def for_conv(cls, weight_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                 groups: int = 1) -> "PatchStatistics":
        _, cg, kh, kw = weight_shape
        return cls(groups, cg * kh * kw, {"kernel": (kh, kw), "strides": tuple(strides),
                                          "pads": tuple(pads), "dilations": tuple(dilations)})

    @classmethod
    def for_dense(cls, weight_shape) -> "PatchStatistics":
        return cls(1, weight_shape[1], None)

    def _patches(self, x: np.ndarray):
        """[groups, positions, patch] float64 torch tensor of ``x``'s patches."""
        torch = _torch()
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.conv is None:
            return t.reshape(1, t.shape[0], -1).double()
        top, left, bottom, right = self.conv["pads"]
        t = torch.nn.functional.pad(t, (left, right, top, bottom))  # zeros: exact in int8
        cols = torch.nn.functional.unfold(t, self.conv["kernel"], dilation=self.conv["dilations"],
                                          stride=self.conv["strides"])  # [N, C*kh*kw, L]
        n, _, positions = cols.shape
        cols = cols.reshape(n, self.groups, self.patch, positions).permute(1, 0, 3, 2)
        return cols.reshape(self.groups, n * positions, self.patch).double()

    def add(self, x_float: np.ndarray, x_quant: np.ndarray) -> None:
        """One calibration input's layer input, from the float network and from the int8
        network's simulation."""
        f, q = self._patches(x_float), self._patches(x_quant)
        self.n += f.shape[1]
        self.sum_f += f.sum(1).numpy()
        self.sum_q += q.sum(1).numpy()
        qt = q.transpose(1, 2)
        self.qq += (qt @ q).numpy()
        self.qf += (qt @ f).numpy()
        self.ff += (f.transpose(1, 2) @ f).numpy()

    def covariances(self):
        """(Cqq, Cqf, Cff): [groups, patch, patch] each."""
        if self.n == 0:
            raise ValueError("AdaRound needs at least one calibration input")
        mq, mf = self.sum_q / self.n, self.sum_f / self.n
        outer = lambda a, b: a[:, :, None] * b[:, None, :]  # noqa: E731
        return (self.qq / self.n - outer(mq, mq), self.qf / self.n - outer(mq, mf),
                self.ff / self.n - outer(mf, mf))


@dataclass
class RoundingResult:
    """What AdaRound did to one layer: the reconstruction error (mean over positions, summed
    over output channels, after bias correction) of nearest rounding and of its own, and the
    share of weights rounded the other way than nearest."""
    error_nearest: float
    error_adaround: float
    flipped: float


def reconstruction_error(rounded: np.ndarray, weight: np.ndarray,
                         stats: PatchStatistics) -> float:
    """The quadratic error above for float weights ``rounded`` (W~) against ``weight`` (W)."""
    cqq, cqf, cff = stats.covariances()
    w, wt = _grouped(weight, stats.groups), _grouped(rounded, stats.groups)
    value = _trace_form(wt, cqq, wt) - 2 * _trace_form(wt, cqf, w) + _trace_form(w, cff, w)
    return float(max(value, 0.0))


def _trace_form(a: np.ndarray, c: np.ndarray, b: np.ndarray) -> float:
    """sum over groups of tr(A C B^T), as batched matrix products (BLAS): a three-operand
    einsum loops in C, about 100x slower on a 1152-wide layer."""
    return float(np.sum(np.matmul(a, c) * b))


def _grouped(weight: np.ndarray, groups: int) -> np.ndarray:
    """[groups, out channels per group, patch] float64."""
    return np.asarray(weight, np.float64).reshape(groups, weight.shape[0] // groups, -1)


class SoftRounding:
    """The rounding variables of one weight tensor (float OIHW or [out, in]): each int8 value
    is floor(w / scale) + h, with h a stretched sigmoid of a learnt V pushed to 0 or 1 (the
    paper's eq. 22-24); the scales are quantize_weights_per_channel's, and the weights at each
    channel's largest magnitude keep their nearest rounding, so the scales stay what they
    were. Shared by the layer-wise error below and the block-wise reconstruction
    (accel.backend.reconstruct)."""

    def __init__(self, weight: np.ndarray):
        torch = _torch()
        self.nearest, self.scales = quantize_weights_per_channel(weight)
        broadcast = (-1,) + (1,) * (np.ndim(weight) - 1)
        w = np.asarray(weight, np.float32)
        steps = w / self.scales.reshape(broadcast)
        floor = np.floor(steps)
        peak = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).reshape(broadcast)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
        self.floor, self.fixed = f32(floor), f32(np.abs(w) == peak) > 0
        self.scale = f32(np.broadcast_to(self.scales.reshape(broadcast), w.shape))
        self.nearest_t = f32(self.nearest)
        # the stretched sigmoid starts at each weight's own fractional part (section 5)
        r = torch.from_numpy(np.clip((steps - floor).astype(np.float64), 0.01, 0.99)).float()
        self.v = torch.log((r - GAMMA) / (ZETA - r)).requires_grad_(True)

    def soft(self):
        torch = _torch()
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def _ints(self, h):
        """floor + h within the weight range; the channel peaks keep their nearest value."""
        torch = _torch()
        return torch.where(self.fixed, self.nearest_t,
                           torch.clamp(self.floor + h, -WEIGHT_MAX, WEIGHT_MAX))

    def weights(self, h=None):
        """The float weights the soft (``h``, default soft()) or given rounding makes."""
        return self._ints(self.soft() if h is None else h) * self.scale

    def regularizer(self, h, step: int, iterations: int):
        """The annealed push of h to 0 or 1 (eq. 24): 0 in the warm-up, then beta falls
        linearly from BETA[0] to BETA[1]."""
        warmup = int(WARMUP * iterations)
        if step < warmup:
            return None
        progress = (step - warmup) / max(1, iterations - warmup)
        beta = BETA[1] + (BETA[0] - BETA[1]) * (1 - progress)
        return (1 - (2 * h - 1).abs().pow(beta)).sum()

    def hard(self) -> np.ndarray:
        """The int8 weights the learnt V chooses (each its floor or its ceiling)."""
        with _torch().no_grad():
            return self._ints((self.v >= 0).float()).numpy().astype(np.int8)


def check_iterations(iterations: int) -> None:
    if iterations < 1:
        raise ValueError(f"AdaRound needs at least 1 iteration, got {iterations}")


def adaround(weight: np.ndarray, stats: PatchStatistics, *, iterations: int = ITERATIONS,
             learning_rate: float = LEARNING_RATE, reg_weight: float = REG_WEIGHT,
             advance=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, RoundingResult]:
    """(int8 weights, per-channel scales, RoundingResult) for float ``weight`` (OIHW or
    [out, in]): the scales are quantize_weights_per_channel's, and every value is its floor or
    its ceiling on that grid (so within one step of nearest; SoftRounding). Never worse than
    nearest rounding on the layer's own error. ``advance(n)`` is called as steps are done (a
    progress bar)."""
    torch = _torch()
    check_iterations(iterations)
    w = np.asarray(weight, np.float32)
    groups = stats.groups
    cqq, cqf, _ = stats.covariances()
    # In D = W~ - W (small), the error is tr(D Cqq D^T) + 2 tr(D (Cqq - Cqf)^T W^T) + const:
    # no cancellation of large terms, so float32 steps suffice. Cqq ~ U L U^T over the
    # eigenvectors that hold all but TAIL of its trace, plus the mean dropped eigenvalue on
    # the rest (activations' covariances have far lower effective rank than their size, and
    # a dense layer's few calibration rows at most their count): (m x K x rank) per step.
    eigenvalues, eigenvectors = np.linalg.eigh(cqq)  # ascending
    eigenvalues = np.clip(eigenvalues, 0, None)
    tail = np.cumsum(eigenvalues, axis=1) / np.maximum(eigenvalues.sum(1, keepdims=True), 1e-300)
    rank = max(1, int((tail > TAIL).sum(axis=1).max()))
    dropped = eigenvalues[:, :-rank] if rank < eigenvalues.shape[1] else eigenvalues[:, :0]
    residual = dropped.mean(axis=1) if dropped.shape[1] else np.zeros(groups)
    basis, kept = eigenvectors[:, :, -rank:], eigenvalues[:, -rank:]
    linear = np.einsum("gml,gkl->gmk", _grouped(w, groups), cqq - cqf)  # W (Cqq - Cqf)^T
    torch.manual_seed(seed)
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    w_t = f32(_grouped(w, groups))
    basis_t, kept_t, linear_t = f32(basis), f32(kept)[:, None, :], f32(linear)
    residual_t = f32(residual)[:, None, None]
    rounding = SoftRounding(w)
    optimizer = torch.optim.Adam([rounding.v], lr=learning_rate)

    def error(d):
        p = torch.bmm(d, basis_t).square()
        isotropic = residual_t * (d.square().sum(2, keepdim=True) - p.sum(2, keepdim=True))
        return (p * kept_t).sum() + isotropic.sum() + 2 * (d * linear_t).sum()

    for step in range(iterations):
        optimizer.zero_grad()
        h = rounding.soft()
        loss = error(rounding.weights(h).reshape(w_t.shape) - w_t)
        push = rounding.regularizer(h, step, iterations)
        if push is not None:
            loss = loss + reg_weight * push
        loss.backward()
        optimizer.step()
        if advance is not None:
            advance()
    q, nearest, scales = rounding.hard(), rounding.nearest, rounding.scales
    shape = (-1,) + (1,) * (w.ndim - 1)
    result = RoundingResult(reconstruction_error(nearest * scales.reshape(shape), w, stats),
                            reconstruction_error(q * scales.reshape(shape), w, stats),
                            float(np.mean(q != nearest)))
    if result.error_adaround > result.error_nearest:  # never worse than nearest
        q = nearest
        result.error_adaround, result.flipped = result.error_nearest, 0.0
    return q, scales, result
