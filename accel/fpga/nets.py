"""Weightless reference networks for the FPGA model's calibration: the Caffe AlexNet
(grouped conv2/4/5, LRN) and VGG-16 that PipeCNN ran (D. Wang, K. Xu, D. Jiang, "PipeCNN: An
OpenCL-Based Open-Source FPGA Accelerator for Convolution Neural Networks", FPT 2017). Weights
are graph inputs with shapes only, so nothing is downloaded. Their own module so that the
estimator (which loads them by name) and the calibration (which estimates them) do not
import each other.
"""

from __future__ import annotations


def _net(name: str, input_shape, body) -> "object":
    """A weightless ONNX model: body(add) calls add(op, inputs, weight_shapes, **attrs)."""
    from onnx import TensorProto, helper

    nodes, inputs = [], [helper.make_tensor_value_info("data", TensorProto.FLOAT,
                                                       list(input_shape))]
    counter = [0]

    def add(op, x, weights=(), **attrs):
        counter[0] += 1
        names = []
        for i, shape in enumerate(weights):
            wname = f"w{counter[0]}_{i}"
            inputs.append(helper.make_tensor_value_info(wname, TensorProto.FLOAT, list(shape)))
            names.append(wname)
        out = f"{op.lower()}{counter[0]}"
        nodes.append(helper.make_node(op, [x] + names, [out], name=out, **attrs))
        return out

    last = body(add)
    outputs = [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, name, inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def alexnet():
    """CaffeNet-order AlexNet (227x227, pool before LRN, grouped conv2/4/5) as PipeCNN ran it."""
    def body(add):
        def conv(x, cin, cout, k, s=1, p=0, g=1):
            x = add("Conv", x, [(cout, cin // g, k, k), (cout,)], kernel_shape=[k, k],
                    strides=[s, s], pads=[p] * 4, group=g)
            return add("Relu", x)
        x = conv("data", 3, 96, 11, s=4)
        x = add("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2])
        x = add("LRN", x, size=5)
        x = conv(x, 96, 256, 5, p=2, g=2)
        x = add("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2])
        x = add("LRN", x, size=5)
        x = conv(x, 256, 384, 3, p=1)
        x = conv(x, 384, 384, 3, p=1, g=2)
        x = conv(x, 384, 256, 3, p=1, g=2)
        x = add("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2])
        x = add("Flatten", x)
        x = add("Relu", add("Gemm", x, [(4096, 9216), (4096,)], transB=1))
        x = add("Relu", add("Gemm", x, [(4096, 4096), (4096,)], transB=1))
        return add("Gemm", x, [(1000, 4096), (1000,)], transB=1)
    return _net("alexnet", (1, 3, 227, 227), body)


def vgg16():
    """VGG-16 (224x224) as PipeCNN ran it."""
    def body(add):
        x, cin = "data", 3
        for cout, repeat in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
            for _ in range(repeat):
                x = add("Conv", x, [(cout, cin, 3, 3), (cout,)], kernel_shape=[3, 3],
                        pads=[1, 1, 1, 1])
                x = add("Relu", x)
                cin = cout
            x = add("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2])
        x = add("Flatten", x)
        x = add("Relu", add("Gemm", x, [(4096, 25088), (4096,)], transB=1))
        x = add("Relu", add("Gemm", x, [(4096, 4096), (4096,)], transB=1))
        return add("Gemm", x, [(1000, 4096), (1000,)], transB=1)
    return _net("vgg16-pipecnn", (1, 3, 224, 224), body)


CALIBRATION_NETS = {"alexnet": alexnet, "vgg16-pipecnn": vgg16}
