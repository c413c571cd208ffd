"""Graphs from the real torch.onnx exporter (issue 4: "accept graphs from different exporters").

Three small nets written in PyTorch -- a ResNet-style CNN (BatchNorm, strided stem, max pool,
residual blocks, a strided 1x1 downsample, a concat of two branches, global average pool,
Linear, softmax), the same net with its head written as tensor maths (x.mean((2, 3)) and
x.view(x.size(0), -1)), and a VGG-style one (conv-relu x2, max pool, Flatten of a 490-value
NCHW map, Linear-ReLU-Dropout-Linear) -- are exported with torch.onnx.export in these settings:

  dynamo        the default since PyTorch 2.9 (torch.export + onnxscript): ReduceMean for the
                pooling, Reshape for flatten, BatchNorm folded by its optimiser
  torchscript   dynamo=False, the legacy exporter: GlobalAveragePool, Flatten, BatchNorm folded
  unfolded      dynamo=False, do_constant_folding=False: BatchNormalization nodes are left for
                our own BatchNorm folding
  dynamo_raw    dynamo=True, optimize=False: the graph as torch.export traced it, shape
                arithmetic included (a bias-less conv gets a zero bias made by Shape(weight) ->
                Expand -> CastLike(0.0) -> Expand), BatchNorm unfolded
and, for the view net only, with a dynamic batch (x.size(0) becomes Shape -> Gather chains; the
batch is made static again for compiling with input_shapes=):
  torchscript_dynamic  the legacy exporter, unfolded, dynamic_axes on the batch
  dynamo_raw_dynamic   dynamo_raw with dynamic_shapes on the batch

Each exported file is compiled with accel.compile and compared with onnxruntime fp32 on the
SAME file (the fidelity contract); onnxruntime is checked against torch itself as a sanity
check of the export. SSD's L2 normalisation, written the two ways torch code does, is exported
in every static setting and must become one L2Norm node. Skipped where torch is not installed (it is an optional test extra)."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import accel  # noqa: E402
from accel import compiler  # noqa: E402
from accel.compiler import ir  # noqa: E402
from accel.compiler.errors import DynamicBatchWarning  # noqa: E402


# --- the nets, in PyTorch -------------------------------------------------------------------


def conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout))


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.a = conv_bn(cin, cout, 3, stride)
        self.b = conv_bn(cout, cout, 3)
        # a strided 1x1 projection where the shape changes, as in ResNet
        self.down = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        skip = x if self.down is None else self.down(x)
        return torch.relu(self.b(torch.relu(self.a(x))) + skip)


class SmallResNet(nn.Module):
    input_shape = (1, 3, 32, 32)

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 5, stride=2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.block1 = ResidualBlock(16, 16, stride=1)
        self.block2 = ResidualBlock(16, 32, stride=2)
        # two branches of different widths (16 + 24, not multiples of 16 together) concatenated
        self.branch_1x1 = nn.Sequential(nn.Conv2d(32, 16, 1), nn.ReLU())
        self.branch_3x3 = nn.Sequential(nn.Conv2d(32, 24, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(40, classes)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        x = torch.cat([self.branch_1x1(x), self.branch_3x3(x)], dim=1)
        return torch.softmax(self.fc(torch.flatten(self.pool(x), 1)), dim=1)


class SmallResNetView(SmallResNet):
    """The same net with the pooling and head written as tensor maths, as many ResNet ports
    do: x.mean((2, 3)) for the global pool, x.view(x.size(0), -1) for the flatten."""

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        x = torch.cat([self.branch_1x1(x), self.branch_3x3(x)], dim=1).mean((2, 3))
        return torch.softmax(self.fc(x.view(x.size(0), -1)), dim=1)


class SmallVGG(nn.Module):
    # 10 channels x 7 x 7 = 490 values flattened in NCHW order: the channel count is not a
    # multiple of the device's channel padding and the map is odd-sized
    input_shape = (1, 3, 14, 14)

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 10, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(490, 64), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(64, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class SmallL2Norm(nn.Module):
    """SSD's conv4_3 normalisation: x / ||x||_2 over the channels times a learned scale per
    channel, written the two ways torch code does it."""

    input_shape = (1, 3, 10, 10)

    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.conv = nn.Conv2d(3, 24, 3, padding=1)
        self.weight = nn.Parameter(torch.linspace(5, 20, 24))

    def forward(self, x):
        x = torch.relu(self.conv(x))
        if self.functional:
            x = nn.functional.normalize(x, dim=1)
        else:
            x = x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        return x * self.weight.view(1, -1, 1, 1)


def seeded(net_class, seed: int) -> nn.Module:
    """The net in eval mode with He-initialised weights drawn under ``seed`` and non-trivial
    BatchNorm statistics (fresh BatchNorm layers are the identity, which would hide folding
    mistakes)."""
    with torch.random.fork_rng():  # leave the global torch RNG as it was
        torch.manual_seed(seed)
        net = net_class()
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                # He init as torchvision's nets use: activations keep their spread through the
                # layers, so the class scores depend on the input and top-1 is not a near-tie
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                with torch.no_grad():
                    m.weight.copy_(0.5 + torch.rand(c))
                    m.bias.copy_(0.2 * torch.randn(c))
                    m.running_mean.copy_(0.2 * torch.randn(c))
                    m.running_var.copy_(0.5 + 1.5 * torch.rand(c))
    net.eval()  # eval: BatchNorm uses the running statistics, Dropout is off
    balance_classes(net)
    return net


def balance_classes(net: nn.Module) -> None:
    """Centre the last layer's scores on typical images, as training would: a random net's
    features share a large common part that otherwise picks the same class for every image."""
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    features = []
    hook = last.register_forward_hook(lambda module, args, out: features.append(args[0]))
    with torch.no_grad():
        for x in inputs(net, 32, seed=1000):
            net(torch.from_numpy(x))
        last.bias -= last.weight @ torch.cat(features).mean(dim=0)
    hook.remove()


# --- export ---------------------------------------------------------------------------------


EXPORTERS = {
    "dynamo": {"dynamo": True},
    "torchscript": {"dynamo": False},
    "unfolded": {"dynamo": False, "do_constant_folding": False},
    "dynamo_raw": {"dynamo": True, "optimize": False},
    "torchscript_dynamic": {"dynamo": False, "do_constant_folding": False,
                            "dynamic_axes": {"image": {0: "batch"}}},
    "dynamo_raw_dynamic": {"dynamo": True, "optimize": False,
                           "dynamic_shapes": ({0: torch.export.Dim("batch", max=64)},)},
}


@dataclass
class Exported:
    net: nn.Module
    path: str
    model: onnx.ModelProto
    output: str
    softmax: bool  # the output is probabilities (compare their logs), else logits


def export(net: nn.Module, exporter: str, path: str, output: str) -> onnx.ModelProto:
    if EXPORTERS[exporter]["dynamo"]:
        pytest.importorskip("onnxscript")  # the dynamo exporter is written with it
    example = torch.zeros(net.input_shape)
    # the legacy exporter warns that it is deprecated; the dynamo one prints its progress
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch's own internals, 2.13
        torch.onnx.export(net, (example,), path, input_names=["image"], output_names=[output],
                          verbose=False, **EXPORTERS[exporter])
    return onnx.load(path)


NETS = {"resnet": (SmallResNet, "probs", True), "resnet_view": (SmallResNetView, "probs", True),
        "vgg": (SmallVGG, "logits", False)}
DYNAMIC = ("torchscript_dynamic", "dynamo_raw_dynamic")
STATIC = [exporter for exporter in EXPORTERS if exporter not in DYNAMIC]
CASES = ([(net, exporter) for net in NETS for exporter in STATIC]
         + [("resnet_view", exporter) for exporter in DYNAMIC])
IDS = [f"{net}-{exporter}" for net, exporter in CASES]


# Exports and compilations are kept for the whole module: pytest reorders the per-device
# test by device and would otherwise export and compile every case again for each device.
_EXPORTED: dict[tuple[str, str], Exported] = {}
_COMPILED: dict[tuple[str, str], accel.CompiledModel] = {}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("torch_onnx")


@pytest.fixture(params=CASES, ids=IDS)
def exported(request, export_dir) -> Exported:
    case = request.param
    if case not in _EXPORTED:
        net_name, exporter = case
        net_class, output, softmax = NETS[net_name]
        net = seeded(net_class, seed=0)
        path = str(export_dir / f"{net_name}-{exporter}.onnx")
        _EXPORTED[case] = Exported(net, path, export(net, exporter, path, output), output,
                                   softmax)
    return _EXPORTED[case]


@pytest.fixture
def compiled(request, exported, fastest_cpu) -> accel.CompiledModel:
    """The export compiled (on the CPU device accel would choose, tests/conftest.py); a
    dynamic batch is made static with input_shapes=."""
    case = request.node.callspec.params["exported"]
    if case not in _COMPILED:
        _COMPILED[case] = accel.compile(exported.model, calibration=inputs(exported.net, 8, seed=0),
                                        device=fastest_cpu, progress=False,
                                        input_shapes={"image": exported.net.input_shape})
    return _COMPILED[case]


@pytest.mark.parametrize("exported", [("resnet_view", "dynamo_raw_dynamic")], indirect=True)
def test_a_dynamic_batch_becomes_the_calibration_batch_with_a_notice(exported, fastest_cpu):
    """Without input_shapes= the dynamic batch is the calibration inputs' (a notice says so)."""
    with pytest.warns(DynamicBatchWarning, match=r"'image'.*batch 1 .*input_shapes=\{'image'"):
        compiled = accel.compile(exported.model, calibration=inputs(exported.net, 2, seed=0),
                                 device=fastest_cpu, progress=False)
    assert compiled.inputs[0].shape == exported.net.input_shape


def inputs(net, count: int, seed: int) -> list[np.ndarray]:
    """Noise around a per-image colour and brightness gradient: plain noise would give a
    global-pooling net the same features, and so the same top-1, for every image."""
    rng = np.random.default_rng(seed)
    n, c, h, w = net.input_shape
    ramp = np.linspace(-1, 1, w, dtype=np.float32)
    images = []
    for _ in range(count):
        colour = rng.uniform(-1, 1, (n, c, 1, 1))
        gradient = rng.uniform(-1, 1, (n, c, 1, 1)) * ramp
        images.append((colour + gradient + rng.normal(0, 0.5, (n, c, h, w))).astype(np.float32))
    return images


def onnxruntime_session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def centred_log(p):
    """Softmax output -> logits up to a constant (cosine of probabilities would flatter)."""
    logp = np.log(np.maximum(p, 1e-30))
    return logp - logp.mean(axis=-1, keepdims=True)


# --- the tests ------------------------------------------------------------------------------


def test_graph_is_the_exporters_own(exported, request):
    """The file really comes from torch.onnx, in the style each setting is known for; this
    fails (rather than passing vacuously) if a new torch changes what the graphs contain."""
    model = exported.model
    onnx.checker.check_model(model)
    assert model.producer_name == "pytorch"
    assert model.producer_version.split("+")[0] == torch.__version__.split("+")[0]
    ops = Counter(node.op_type for node in model.graph.node)
    net_name, exporter = request.node.callspec.params["exported"]
    legacy = exporter in ("torchscript", "unfolded", "torchscript_dynamic")
    assert ops["Conv"] >= 2 and ops["Gemm"] >= 1, ops
    if net_name == "vgg":
        assert ops["BatchNormalization"] == 0, ops
    elif exporter in ("dynamo", "torchscript"):
        assert ops["BatchNormalization"] == 0, ops  # folded into the convs by the exporter
    else:
        assert ops["BatchNormalization"] == 6, ops  # left for our BatchNorm folding
    if net_name != "vgg":
        assert ops["Concat"] >= 1 and ops["Add"] == 2 and ops["Softmax"] == 1, ops
        pooling = "GlobalAveragePool" if legacy and net_name == "resnet" else "ReduceMean"
        assert ops[pooling] == 1, ops
    flatten = "Flatten" if legacy and net_name != "resnet_view" else "Reshape"
    assert ops[flatten] >= 1, ops
    if exporter.startswith("dynamo_raw") and net_name != "vgg":
        # the unoptimised shape arithmetic of the zero biases of bias-less convs
        assert ops["Shape"] >= 6 and ops["Expand"] >= 12 and ops["CastLike"] >= 6, ops
    weights = {t.name for t in model.graph.initializer}
    reads_shape = any(n.op_type == "Shape" and n.input[0] not in weights for n in model.graph.node)
    assert reads_shape == (exporter in DYNAMIC), ops  # x.size(0) of a dynamic batch
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    batch = "batch" if exporter in DYNAMIC else 1
    assert dims == [batch, *exported.net.input_shape[1:]]  # NCHW


def test_onnxruntime_agrees_with_torch(exported):
    """Sanity check of the export itself, so that a fidelity failure below is ours."""
    session = onnxruntime_session(exported.path)
    for x in inputs(exported.net, 4, seed=1):
        (ref,) = session.run(None, {"image": x})
        with torch.no_grad():
            want = exported.net(torch.from_numpy(x)).numpy()
        # measured: max abs difference 6e-8
        np.testing.assert_allclose(ref, want, rtol=1e-4, atol=1e-4)


def test_float_graph_matches_onnxruntime(exported):
    """Before quantization, the compiler's float graph of the file computes what onnxruntime
    does: every folded shape, zero bias and BatchNorm is right (int8 rounding below would hide
    a small mistake). A dynamic batch is fixed with input_shapes."""
    graph = compiler.load_onnx(exported.path, input_shapes={"image": exported.net.input_shape})
    compiler.optimize(graph)
    assert all(isinstance(n, ir.CANONICAL_NODE_TYPES) for n in graph.nodes), graph.summary()
    session = onnxruntime_session(exported.path)
    for x in inputs(exported.net, 2, seed=1):
        (ref,) = session.run(None, {"image": x})
        got = compiler.interpret(graph, x)[exported.output]
        # measured: max abs difference 3e-7 (probabilities) / 6e-6 (vgg's logits, up to 6)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


# measured (8 inputs, calibration on 8 others; the int8 results are the same on every device
# and in every export setting, resnet_view's the same as resnet's; weight seeds 0/1/2, the
# test uses 0):
#   resnet: min cosine 0.9971/0.9937/0.9865, mean 0.9982/0.9984/0.9947, top-1 8/8 each
#   vgg:    min cosine 0.9556/0.9924/0.9967, mean 0.9936/0.9985/0.9988, top-1 8/8 each
# (vgg's 0.9556 is an image whose centred logits are small, so rounding weighs more).
# Thresholds set below the worst seed, with margin.
MIN_COSINE = {"resnet": 0.98, "resnet_view": 0.98, "vgg": 0.94}
MIN_MEAN_COSINE = {"resnet": 0.99, "resnet_view": 0.99, "vgg": 0.99}
MIN_SAME_TOP1 = 7  # of 8


def test_accel_matches_onnxruntime(exported, compiled, request):
    net_name = request.node.callspec.params["exported"][0]
    assert [o.name for o in compiled.outputs] == [exported.output]
    assert compiled.inputs[0].shape == exported.net.input_shape
    ops = {step.op for step in compiled.lowered.steps}
    assert {"conv", "pool"} <= ops, ops
    if net_name != "vgg":
        assert "global_avg_pool" in ops, ops
    session = onnxruntime_session(exported.path)
    cosines, same_top1 = [], 0
    evaluation = inputs(exported.net, 8, seed=1)
    for x in evaluation:
        ours = compiled.run(x)[exported.output]
        (ref,) = session.run(None, {"image": x})
        assert ours.shape == ref.shape and ours.dtype == np.float32
        if exported.softmax:
            np.testing.assert_allclose(ours.sum(), 1.0, rtol=1e-5)
            cosines.append(cosine(centred_log(ours), centred_log(ref)))
        else:
            cosines.append(cosine(ours, ref))
        same_top1 += int(np.argmax(ours) == np.argmax(ref))
    assert min(cosines) >= MIN_COSINE[net_name], cosines
    assert np.mean(cosines) >= MIN_MEAN_COSINE[net_name], cosines
    assert same_top1 >= MIN_SAME_TOP1, (same_top1, len(evaluation))


def test_bit_identical_on_every_device(exported, compiled, device):
    """The compiled torch export gives the same outputs, bit for bit, on every device
    (``device``: once per device present, see conftest.py)."""
    x = inputs(exported.net, 1, seed=7)[0]
    want = compiled.run(x)[exported.output]
    other = accel.CompiledModel(compiled.lowered, device)
    np.testing.assert_array_equal(other.run(x)[exported.output], want, err_msg=device.short_name)


@pytest.mark.parametrize("exporter", STATIC)
@pytest.mark.parametrize("functional", [False, True], ids=["pow_sum_sqrt", "F.normalize"])
def test_l2_normalisation_is_one_node(exporter, functional, export_dir):
    """However the exporter writes it (Pow/ReduceSum/Sqrt or ReduceL2/Clip/Expand, constants
    as Constant nodes or CastLike chains), an L2 normalisation and its scale are one L2Norm."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = SmallL2Norm(functional).eval()
    path = str(export_dir / f"l2norm-{functional}-{exporter}.onnx")
    export(net, exporter, path, "out")
    graph = compiler.load_onnx(path)
    compiler.optimize(graph)
    assert graph.op_counts() == {"Conv": 1, "L2Norm": 1}, graph.summary()
    l2 = next(n for n in graph.nodes if isinstance(n, ir.L2Norm))
    np.testing.assert_allclose(graph.const(l2.scale), np.linspace(5, 20, 24), rtol=1e-6)
    session = onnxruntime_session(path)
    x = inputs(net, 1, seed=2)[0]
    (ref,) = session.run(None, {"image": x})
    # measured: max abs difference 2e-6 (outputs up to 15)
    np.testing.assert_allclose(compiler.interpret(graph, x)["out"], ref, rtol=1e-5, atol=1e-4)


def test_fpga_estimate_reads_every_export(exported, request):
    """accel.fpga.estimate models each export: every Conv and the Gemm become passes, and
    only ops the pipeline really leaves to the host remain unmodelled (raw exports' shape
    arithmetic included); a dynamic batch is a clear error."""
    import accel.fpga
    model = exported.model
    try:
        est = accel.fpga.estimate(model)
    except ValueError as error:  # dynamo_raw_dynamic: x.size(0) arithmetic on a symbolic batch
        assert request.node.callspec.params["exported"][1] in DYNAMIC
        assert "give the model a fixed input shape" in str(error)
        return
    kinds = Counter(layer.type for layer in est.layers)
    ops = Counter(node.op_type for node in model.graph.node)
    assert kinds["conv"] == ops["Conv"] and kinds["fc"] == ops["Gemm"], (kinds, ops)
    assert set(est.unmodelled) <= {"Softmax", "Where", "Equal", "ConstantOfShape", "Range"}, \
        est.unmodelled
