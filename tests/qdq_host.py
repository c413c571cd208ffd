"""onnxruntime's int8 arithmetic depends on the host's instruction set; QDQ test models are
made so that it is exact on every host class.

On x86 hosts without VNNI (AVX2 only, or AVX-512 without VNNI), MLAS multiplies u8
activations by s8 weights with vpmaddubsw, which adds each pair of adjacent products into a
SATURATING int16: 2 * 255 * 127 > 32767, so onnxruntime's accumulator there is not the exact
integer sum (onnxruntime documents this, and recommends reduce_range on such hosts). With
VNNI (vpdpbusd) every product is added exactly. accel always computes the exact sum.

So the tests quantize with ``reduce_range=True`` where onnxruntime would saturate: 7-bit
weights (|w| <= 64) keep 2 * 255 * 64 = 32640 below 32767, onnxruntime's sum is exact again,
and bit-equality is a real claim on every host class. ``test_qdq_saturation.py`` shows the
saturation itself on hosts that have it.
"""

from __future__ import annotations

from accel.isa import host_isa


def ort_u8s8_saturates() -> bool:
    """Whether onnxruntime's u8 x s8 products are summed in saturating int16 pairs here
    (the real host: ACCEL_CPU_ISA changes accel's kernels, not onnxruntime's)."""
    return not host_isa().has_vnni


def host_reduce_range() -> bool:
    """The ``reduce_range`` that makes onnxruntime's int8 arithmetic exact on this host."""
    return ort_u8s8_saturates()


def quantize_qdq(model, calibration, tmp_path, activation_type: str, *,
                 reduce_range: bool | None = None, **options):
    """onnxruntime's quantize_static QDQ model of ``model`` as the tests make them: s8
    per-channel weights, ``activation_type`` ("QUInt8" or "QInt8") activations, calibrated
    on ``calibration`` (arrays for the first input), ``reduce_range`` the host's
    (host_reduce_range) unless given, and quantize_static's other ``options``."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            name = model.graph.input[0].name
            self.items = iter([{name: x} for x in calibration])

        def get_next(self):
            return next(self.items, None)

    src, dst = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=getattr(QuantType, activation_type),
                    weight_type=QuantType.QInt8, per_channel=True,
                    reduce_range=host_reduce_range() if reduce_range is None else reduce_range,
                    **options)
    return onnx.load(dst)
