"""The int8 outputs of the model zoo and of the test suite's QDQ models, on every device,
equal the ones recorded in tests/data/recorded_outputs.json, bit for bit: a refactor of
the back end (lowering, placement, binding) must not change a single bit.

Each case is compiled once (lowering is device-independent) and bound to every device;
the raw int8 device outputs (``run_int8``) of a few fixed inputs are hashed (SHA-256).
The zoo's ResNets and DenseNet take a 64 x 64 input and VGG-16 a 64 x 64 input with fc6's
weights cut to the 2 x 2 feature map it then sees (the builders fix 224 x 224; the layers
and their lowering are the same); SSD keeps 300 x 300 (its heads' reshapes fix it). QDQ
models are quantized with reduce_range=True on every host, so they do not depend on it.

Calibration runs the float interpreter (numpy), whose last bits may differ on another host
class (BLAS kernels per instruction set): the recorded activation scales are compared
first. A case whose scales differ on a host of another class than the recording's is
checked against that class's own recording (a case's "other_hosts"; recorded on an
AVX-512 VNNI host too) where there is one, and skipped, not failed, where there is none
or its scales differ as well. To record again (only from code known to be right; on a host
of another class, only the cases whose scales differ are recorded, under its class):
    ACCEL_RECORD_OUTPUTS=1 .venv/bin/python -m pytest tests/test_recorded_outputs.py
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import accel
from accel.backend import api
from accel.isa import host_isa

from chosen_devices import chosen, find
from qdq_host import quantize_qdq

DATA = Path(__file__).resolve().parent / "data" / "recorded_outputs.json"
RECORD = os.environ.get("ACCEL_RECORD_OUTPUTS") == "1"
SMALL = 64  # the zoo's input side where the architecture allows it


# --- the cases ------------------------------------------------------------------------------


def _small_input(model: onnx.ModelProto, side: int) -> onnx.ModelProto:
    """``model`` with a side x side input (NCHW), its preprocessing metadata dropped."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = side
    del model.graph.value_info[:]
    keep = [p for p in model.metadata_props if p.key != api.META_PREPROCESSING]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    return model


def _vgg16_small() -> onnx.ModelProto:
    from accel import models
    model = _small_input(models.build("vgg16"), SMALL)
    side = SMALL // 32  # five 2x2 pools
    for i, init in enumerate(model.graph.initializer):
        if tuple(init.dims) == (4096, 512 * 7 * 7):  # fc6, after the flatten
            w = numpy_helper.to_array(init).reshape(-1, 512, 7, 7)[:, :, :side, :side]
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(
                np.ascontiguousarray(w.reshape(w.shape[0], -1)), init.name))
    return model


def _zoo(name: str):
    def make(tmp_path):
        from accel import models
        if name == "vgg16":
            model = _vgg16_small()
        elif name == "ssd_vgg300":
            model = models.build(name)
        else:
            model = _small_input(models.build(name), SMALL)
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        rng = np.random.default_rng(0)
        images = [rng.normal(0, 60, shape).astype(np.float32) for _ in range(2)]
        return model, images[:1], images[1:]
    return make


def _net(builder, activation_type: str | None = None, pre_processed: bool = False):
    """A test net: fp32 calibrated on 8 inputs, or onnxruntime's QDQ of it."""
    def make(tmp_path):
        import test_compile
        fp32 = builder()
        if pre_processed:
            from test_qdq import ort_pre_processed
            fp32 = ort_pre_processed(fp32, tmp_path)
        calibration = test_compile.inputs_for(fp32, 8, 0)
        evaluation = test_compile.inputs_for(fp32, 2, 1)
        if activation_type is None:
            return fp32, calibration, evaluation
        return _qdq(fp32, calibration, tmp_path, activation_type), None, evaluation
    return make


def _qdq(model, calibration, tmp_path, activation_type):
    """onnxruntime's quantize_static as the tests use it, with 7-bit weights on every host."""
    return quantize_qdq(model, calibration, tmp_path, activation_type, reduce_range=True)


def _zoo_qdq(name: str):
    def make(tmp_path):
        from accel import models
        model = _small_input(models.build(name), SMALL)
        rng = np.random.default_rng(1)
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        images = [rng.normal(0, 60, shape).astype(np.float32) for _ in range(3)]
        return _qdq(model, images[:2], tmp_path, "QUInt8"), None, images[2:]
    return make


def _cases() -> dict:
    import test_compile as tc
    import test_depthwise_model as td
    import test_qdq as tq
    import test_qdq_concat as tqc
    return {
        "zoo/resnet50": _zoo("resnet50"),
        "zoo/resnet152": _zoo("resnet152"),
        "zoo/densenet121": _zoo("densenet121"),
        "zoo/vgg16": _zoo("vgg16"),
        "zoo/ssd_vgg300": _zoo("ssd_vgg300"),
        "fp32/branchy": _net(tc.branchy_net),
        "fp32/nhwc_dense": _net(tc.nhwc_dense_net),
        "fp32/mobile": _net(td.mobile_net),
        "qdq/resnet50": _zoo_qdq("resnet50"),
        "qdq/densenet121": _zoo_qdq("densenet121"),
        "qdq/nhwc_dense_u8": _net(tc.nhwc_dense_net, "QUInt8"),
        "qdq/nhwc_dense_s8": _net(tc.nhwc_dense_net, "QInt8"),
        "qdq/branchy": _net(tc.branchy_net, "QUInt8"),
        "qdq/conv_stack": _net(tq.conv_stack_net, "QUInt8"),
        "qdq/residual_u8": _net(tq.residual_net, "QUInt8"),
        "qdq/residual_s8": _net(tq.residual_net, "QInt8"),
        "qdq/transition_u8": _net(tq.transition_net, "QUInt8"),
        "qdq/transition_s8": _net(tq.transition_net, "QInt8"),
        "qdq/l2norm": _net(tq.l2norm_net, "QUInt8"),
        "qdq/concat_u8": _net(tqc.concat_net, "QUInt8"),
        "qdq/concat_s8": _net(tqc.concat_net, "QInt8"),
        "qdq/concat_batchnorm": _net(tqc.concat_batchnorm_net, "QUInt8", pre_processed=True),
        "qdq/mobile": _net(td.mobile_net, "QUInt8"),
    }


CASES = _cases()
SLOW = {"zoo/resnet152", "zoo/vgg16", "zoo/ssd_vgg300", "qdq/resnet50", "qdq/densenet121",
        "zoo/resnet50", "zoo/densenet121"}
PARAMS = [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES]


# --- compiling once, hashing ----------------------------------------------------------------

_COMPILED: dict[str, tuple] = {}


def compiled_case(name: str, tmp_path_factory):
    """(CompiledModel on the first chosen CPU device, evaluation inputs), once per process."""
    if name not in _COMPILED:
        model, calibration, inputs = CASES[name](tmp_path_factory.mktemp(name.replace("/", "_")))
        cpu = find("cpu") or chosen()[0]
        compiled = api.compile(model, calibration=calibration, device=cpu, progress=False)
        _COMPILED[name] = (compiled, inputs)
    return _COMPILED[name]


def scales_digest(lowered) -> str:
    """What calibration chose: every device tensor's scale and zero point."""
    q = [(t.name, t.qparams.scale, t.qparams.zero_point) for t in lowered.device_inputs]
    q += [(s.output, *s.attrs["output_qparams"]) for s in lowered.steps]
    return hashlib.sha256(repr(q).encode()).hexdigest()


def outputs_digest(compiled, inputs) -> tuple[str, list[int]]:
    """SHA-256 of every int8 device output of every input, and a few of their values."""
    digest, sample = hashlib.sha256(), []
    for x in inputs:
        for out in compiled.run_int8(x):
            digest.update(repr(out.shape).encode())
            digest.update(np.ascontiguousarray(out).tobytes())
            sample += [int(v) for v in out.ravel()[:4]]
    return digest.hexdigest(), sample


def _recorded() -> dict:
    return json.loads(DATA.read_text()) if DATA.is_file() else {"cases": {}}


@pytest.mark.parametrize("case", PARAMS)
def test_outputs_equal_the_recorded_ones(case, device, tmp_path_factory, monkeypatch):
    compiled, inputs = compiled_case(case, tmp_path_factory)
    # On the emulator every case runs as FPGA pipelines (its default): the five zoo models
    # and the QDQ ones, in seconds each since the emulator gets its threads (SSD at 300 x 300
    # about 80 s on a quiet 2-core host, over 300 s beside other work: the watchdog is there
    # for a stalled pipeline, so a slow one gets more time here).
    monkeypatch.setenv("ACCEL_FPGA_TIMEOUT_S", "1800")
    on_device = api.CompiledModel(compiled.lowered, device)
    if device.kind == "fpga-emulator":  # stages of concurrent pipeline kernels
        assert on_device._bound.plan.num_queues >= 2
    scales = scales_digest(compiled.lowered)
    digest, sample = outputs_digest(on_device, inputs)
    level = host_isa().native_level
    if RECORD:
        _record(case, device, level, scales, digest, sample)
        return
    data = _recorded()
    if case not in data["cases"]:
        pytest.fail(f"no recorded outputs for {case} in {DATA}")
    want = data["cases"][case]
    if scales != want["scales"]:
        if level == data.get("host_isa"):
            pytest.fail(f"{case}: the activation scales differ from the recorded ones (the "
                        "quantizer or the float interpreter changed)")
        want = want.get("other_hosts", {}).get(level)
        if want is None or scales != want["scales"]:
            pytest.skip(f"{case}: calibration chose other scales on this {level} host than "
                        f"on the recording's {data.get('host_isa')} one" +
                        ("" if want is None else " and its own class's recording"))
    assert (digest, sample) == (want["outputs"], want["sample"]), \
        f"{case} on {device.short_name}: int8 outputs differ from the recorded ones"


def _record(case, device, level, scales, digest, sample):
    """Records a case's outputs: under the case itself on the recording's host class (or the
    first), under its "other_hosts" entry for this class on another class whose calibration
    chose other scales (numpy's float sums differ per instruction set)."""
    data = _recorded()
    data.setdefault("host_isa", level)
    entry = data["cases"].setdefault(case, {})
    if level != data["host_isa"] and entry.get("scales") not in (None, scales):
        entry = entry.setdefault("other_hosts", {}).setdefault(level, {})
    if entry.get("scales") == scales and entry.get("outputs") not in (None, digest):
        pytest.fail(f"{case} on {device.short_name}: outputs differ from another device's")
    entry.update(scales=scales, outputs=digest, sample=sample)
    entry["devices"] = sorted(set(entry.get("devices", [])) | {device.short_name})
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


# An artifact saved by the code before the back end was split into modules (format
# version 1: branchy_net, calibrated, compiled on intel-cpu) and the SHA-256 of its int8
# device outputs on test_compile.inputs_for(branchy_net(), 1, 3) then.
SAVED = Path(__file__).resolve().parent / "data" / "branchy-v1.accel"
SAVED_OUTPUTS = "a9ea717a2557b3fdbe2f8d76165d068580bf68f51f573d108f924d7b16253207"


def test_an_older_saved_artifact_loads_and_gives_its_recorded_outputs(device):
    import test_compile
    loaded = accel.load(SAVED, device=device)
    x = test_compile.inputs_for(test_compile.branchy_net(), 1, 3)
    assert outputs_digest(loaded, x)[0] == SAVED_OUTPUTS, device.short_name
