"""FPGA side of accel: the design record and the analytical Arria 10 performance /
resource model.

    accel.fpga.DEFAULT_DESIGN                      # the bitstream's knobs (accel/fpga/design.py)
    est = accel.fpga.estimate("resnet50", board="a10gx1150", vec_size=32, lane_num=64)
    est.latency_ms, est.layers, est.resources, est.binding_resource
    choice = accel.fpga.choose_knobs("resnet50", "a10gx1150")
    accel.fpga.calibrate()     # against PipeCNN's published figures

Nothing here imports onnx or the compiler at import time (they load when a model is read).
"""

from .boards import BOARDS, Board, get_board
from .calibration import PIPECNN_FIGURES, calibrate
from .design import DEFAULT_DESIGN, FpgaDesign
from .estimate import (ACCEL_DESIGN, DEFAULT_LANE_NUM, DEFAULT_VEC_SIZE, PIPECNN_DESIGN, Design,
                       Estimate, KnobChoice, LayerEstimate, Resources, ResourceUse, choose_knobs,
                       estimate, load_model, resources)
from .layers import ExtractedModel, Layer, PoolSpec, extract_layers
from .nets import CALIBRATION_NETS

__all__ = [
    "BOARDS", "Board", "get_board", "PIPECNN_FIGURES", "calibrate", "DEFAULT_DESIGN",
    "FpgaDesign", "ACCEL_DESIGN", "DEFAULT_LANE_NUM", "DEFAULT_VEC_SIZE", "PIPECNN_DESIGN",
    "Design", "Estimate", "KnobChoice", "LayerEstimate", "Resources", "ResourceUse",
    "choose_knobs", "estimate", "load_model", "resources", "ExtractedModel", "Layer", "PoolSpec",
    "extract_layers", "CALIBRATION_NETS",
]
