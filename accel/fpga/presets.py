"""FPGA designs a user picks by name (``accel.compile(..., fpga_design="board")``, ``accel
compile --fpga-design board``), and the form a compiled model saves its design in.

    "default"     the compiler's and emulator's default (design.DEFAULT_DESIGN): VEC 16 x
                  LANE 16, the broadcast MAC array, a 1-cycle epilogue: any model, no stall
    "board"       the Arria 10 design the estimator models (design.BOARD_DESIGN at VEC 32 x
                  LANE 64): the systolic MAC array, the epilogue in 2 cycles per vector
    "persistent"  "board" with the persistent kernels reading layer descriptors

Records with a modelled-only option (design.MODELLED_ONLY) build no bitstream and have no name.
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace

from .design import BOARD_DESIGN, DEFAULT_DESIGN, PERSISTENT_DESIGN, FpgaDesign

# The estimator's default knobs (estimate.DEFAULT_VEC_SIZE x DEFAULT_LANE_NUM; a test keeps
# them equal): ResNet-50's fastest fitting VEC x LANE on an Arria 10 GX1150.
BOARD_KNOBS = dict(vec_size=32, lane_num=64)

DESIGNS: dict[str, FpgaDesign] = {
    "default": DEFAULT_DESIGN,
    "board": replace(BOARD_DESIGN, **BOARD_KNOBS),
    "persistent": replace(PERSISTENT_DESIGN, **BOARD_KNOBS),
}


def resolve(design) -> FpgaDesign | None:
    """An FpgaDesign from a name in DESIGNS or an FpgaDesign; None stays None (the
    compiler's default). A record that builds no bitstream is refused here, before any work."""
    if design is None:
        return None
    if isinstance(design, str):
        try:
            design = DESIGNS[design]
        except KeyError:
            raise ValueError(f"unknown FPGA design {design!r}; known designs: "
                             f"{', '.join(DESIGNS)} (or an accel.fpga.FpgaDesign)") from None
    if not isinstance(design, FpgaDesign):
        raise TypeError(f"fpga_design must be a design name ({', '.join(DESIGNS)}) or an "
                        f"accel.fpga.FpgaDesign, got {type(design).__name__}")
    if design.modelled_only:
        raise ValueError(f"FPGA design option(s) {', '.join(design.modelled_only)} are "
                         "modelled only: no kernel implements them, so no bitstream can be "
                         "built from this design")
    return design


def to_dict(design: FpgaDesign) -> dict:
    """The design as JSON-ready fields (model.json's "fpga_design")."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(design).items()}


def from_dict(doc: dict) -> FpgaDesign:
    """The design saved by to_dict; ValueError for a field this accel does not know."""
    if not isinstance(doc, dict):
        raise ValueError(f"fpga_design must be an object, got {type(doc).__name__}")
    known = {f.name for f in fields(FpgaDesign)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValueError(f"fpga_design has fields this accel does not know: {unknown}")
    return FpgaDesign(**{key: tuple(value) if isinstance(value, list) else value
                         for key, value in doc.items()})
