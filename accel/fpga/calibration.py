"""Calibration of the FPGA model against PipeCNN's published figures.

PipeCNN (D. Wang, K. Xu, D. Jiang, "PipeCNN: An OpenCL-Based Open-Source FPGA Accelerator for
Convolution Neural Networks", FPT 2017, Table I; the PDF is documents/FPT2017-PipeCNN.pdf in
github.com/doonny/PipeCNN) reports 8-bit AlexNet and VGG-16 execution times:

    DE5a-Net, Arria 10 GX1150: 683 of 1,518 DSPs, 218 MHz: AlexNet 5 ms, VGG-16 110 ms
    DE5-Net, Stratix V GXA7:   247 of 256 DSPs,   198 MHz: AlexNet 15 ms, VGG-16 254 ms

The paper states the DE5-Net knobs (VEC_SIZE=16, CU_NUM=LANE_NUM=28, its Fig. 6 best) but not
the Arria 10 ones, so we infer them by a rule fixed before comparing times: VEC_SIZE=16 (the
DE5-Net best and the default of later releases) and the largest LANE_NUM from the list PipeCNN's
hw_param.cl accepts for AlexNet whose MAC array fits the 683 DSPs reported at two 8-bit products
per DSP: LANE_NUM=64 (16 x 64 / 2 = 512 DSPs for the MACs). The host configurations of that
release run AlexNet and VGG-16 at batch 16 (FC weights read once per batch), and the README
gives the DE5-Net AlexNet figure (15 ms) at batch 16, so the times are per image at batch 16.

The nets (accel/fpga/nets.py) are the Caffe AlexNet (grouped conv2/4/5, LRN) and VGG-16 that
PipeCNN ran, built weightless (weights are graph inputs with shapes only), so nothing is
downloaded. The fmax rule's published clock points are in accel/fpga/fmax.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from .boards import get_board
from .estimate import PIPECNN_DESIGN, estimate
from .nets import CALIBRATION_NETS, alexnet, vgg16  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Published:
    board: str
    net: str
    ms_per_image: float
    fmax_mhz: float
    dsp_used: int
    vec_size: int
    lane_num: int
    batch: int
    knobs_source: str


PIPECNN_FIGURES = (
    Published("a10gx1150", "alexnet", 5.0, 218.0, 683, 16, 64, 16,
              "inferred: VEC_SIZE=16, largest listed LANE_NUM fitting 683 DSPs"),
    Published("a10gx1150", "vgg16-pipecnn", 110.0, 218.0, 683, 16, 64, 16,
              "inferred: VEC_SIZE=16, largest listed LANE_NUM fitting 683 DSPs"),
    Published("s5gxa7", "alexnet", 15.0, 198.0, 247, 16, 28, 16, "paper, Fig. 6"),
    Published("s5gxa7", "vgg16-pipecnn", 254.0, 198.0, 247, 16, 28, 16, "paper, Fig. 6"),
)


@dataclass(frozen=True)
class CalibrationPoint:
    figure: Published
    modelled_ms: float
    modelled_dsp: int

    @property
    def error_percent(self) -> float:
        return 100.0 * (self.modelled_ms - self.figure.ms_per_image) / self.figure.ms_per_image

    def line(self) -> str:
        f = self.figure
        return (f"{f.net:<14} {f.board:<10} VEC={f.vec_size:<3} LANE={f.lane_num:<4} "
                f"{f.fmax_mhz:.0f} MHz batch {f.batch}: modelled {self.modelled_ms:7.2f} ms, "
                f"published {f.ms_per_image:6.1f} ms, error {self.error_percent:+6.1f}%; "
                f"DSP modelled {self.modelled_dsp} vs published {f.dsp_used}")


def calibrate(figures=PIPECNN_FIGURES, vec_size: int | None = None,
              lane_num: int | None = None) -> list[CalibrationPoint]:
    """The model (PipeCNN-like datapath) against each published figure, per image."""
    points = []
    for figure in figures:
        vec = vec_size or figure.vec_size
        lane = lane_num or figure.lane_num
        est = estimate(figure.net, get_board(figure.board), vec, lane, figure.fmax_mhz,
                       batch=figure.batch, design=PIPECNN_DESIGN)
        points.append(CalibrationPoint(figure, est.per_image_ms, est.resources.dsp.used))
    return points
