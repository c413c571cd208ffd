"""A small ResNet-style network trained here, in numpy, on scikit-learn's digits (8x8
images upsampled to 16x16), exported as an fp32 ONNX model: the accuracy check of int8
compilation needs a network whose weights mean something.

    conv3x3(1->16)+ReLU -> conv3x3/2(16->32)+ReLU -> [conv3x3+ReLU -> conv3x3] + skip, ReLU
    -> GlobalAveragePool -> Flatten -> Gemm(32->10) -> Softmax

Training is deterministic (seeded) and takes a few seconds on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIDE = 16


def load_data(seed: int = 0):
    """(x_train, y_train, x_test, y_test): float32 NCHW [N,1,16,16] in [0, 1]."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    images = np.kron(images, np.ones((2, 2), np.float32))[:, None]  # nearest upsampling
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], digits.target[order]
    split = 1300
    return images[:split], labels[:split], images[split:], labels[split:]


def _im2col(x, k, stride, pad):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    taps = [xp[:, :, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
            for ky in range(k) for kx in range(k)]
    cols = np.stack(taps, axis=2)  # n, c, k*k, oh, ow
    return cols.transpose(0, 3, 4, 1, 2).reshape(n * oh * ow, c * k * k), (oh, ow)


def _col2im(dcols, shape, k, stride, pad, oh, ow):
    n, c, h, w = shape
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), np.float32)
    d = dcols.reshape(n, oh, ow, c, k * k).transpose(0, 3, 4, 1, 2)
    for t in range(k * k):
        ky, kx = divmod(t, k)
        dxp[:, :, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride] += d[:, :, t]
    return dxp[:, :, pad:pad + h, pad:pad + w]


@dataclass
class ConvLayer:
    w: np.ndarray  # O, C, 3, 3
    b: np.ndarray
    stride: int

    def forward(self, x):
        cols, (oh, ow) = _im2col(x, 3, self.stride, 1)
        out = cols @ self.w.reshape(len(self.w), -1).T + self.b
        self.cache = (x.shape, cols, oh, ow)
        return out.reshape(x.shape[0], oh, ow, -1).transpose(0, 3, 1, 2)

    def backward(self, dout):
        shape, cols, oh, ow = self.cache
        d = dout.transpose(0, 2, 3, 1).reshape(-1, len(self.w))
        self.dw = (d.T @ cols).reshape(self.w.shape)
        self.db = d.sum(axis=0)
        return _col2im(d @ self.w.reshape(len(self.w), -1), shape, 3, self.stride, 1, oh, ow)


class DigitsNet:
    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)

        def conv(cin, cout, stride):
            w = rng.normal(0, np.sqrt(2.0 / (9 * cin)), (cout, cin, 3, 3)).astype(np.float32)
            return ConvLayer(w, np.zeros(cout, np.float32), stride)

        self.convs = [conv(1, 16, 1), conv(16, 32, 2), conv(32, 32, 1), conv(32, 32, 1)]
        self.fc_w = rng.normal(0, np.sqrt(1.0 / 32), (10, 32)).astype(np.float32)
        self.fc_b = np.zeros(10, np.float32)

    def params(self):
        return [p for c in self.convs for p in (c.w, c.b)] + [self.fc_w, self.fc_b]

    def grads(self):
        return [g for c in self.convs for g in (c.dw, c.db)] + [self.dfc_w, self.dfc_b]

    def forward(self, x):
        c1, c2, c3, c4 = self.convs
        self.a1 = np.maximum(c1.forward(x), 0)
        self.a2 = np.maximum(c2.forward(self.a1), 0)
        self.a3 = np.maximum(c3.forward(self.a2), 0)
        self.a4 = np.maximum(c4.forward(self.a3) + self.a2, 0)
        self.pooled = self.a4.mean(axis=(2, 3))
        return self.pooled @ self.fc_w.T + self.fc_b

    def backward(self, dlogits):
        c1, c2, c3, c4 = self.convs
        self.dfc_w = dlogits.T @ self.pooled
        self.dfc_b = dlogits.sum(axis=0)
        dpool = dlogits @ self.fc_w
        da4 = np.broadcast_to(dpool[:, :, None, None] / (self.a4.shape[2] * self.a4.shape[3]),
                              self.a4.shape) * (self.a4 > 0)
        da3 = c4.backward(da4) * (self.a3 > 0)
        da2 = (c3.backward(da3) + da4) * (self.a2 > 0)
        da1 = c2.backward(da2) * (self.a1 > 0)
        c1.backward(da1)


def train(epochs: int = 8, batch: int = 32, lr: float = 3e-3, seed: int = 0) -> DigitsNet:
    x_train, y_train, _, _ = load_data(seed)
    net = DigitsNet(seed)
    params = net.params()
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    rng = np.random.default_rng(seed + 1)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            logits = net.forward(x_train[idx])
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            probs[np.arange(len(idx)), y_train[idx]] -= 1.0
            net.backward((probs / len(idx)).astype(np.float32))
            step += 1
            for p, g, mi, vi in zip(params, net.grads(), m, v):  # Adam
                mi[...] = 0.9 * mi + 0.1 * g
                vi[...] = 0.999 * vi + 0.001 * g * g
                p -= lr * (mi / (1 - 0.9 ** step)) / (np.sqrt(vi / (1 - 0.999 ** step)) + 1e-8)
    return net


def accuracy(net: DigitsNet, x, y) -> float:
    return float((net.forward(x).argmax(axis=1) == y).mean())


def to_onnx(net: DigitsNet, batch: int = 1) -> onnx.ModelProto:
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def conv(i, x, stride):
        c = net.convs[i]
        out = f"conv{i}"
        nodes.append(helper.make_node("Conv", [x, const(f"conv{i}.w", c.w), const(f"conv{i}.b", c.b)],
                                      [out], name=out, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                      strides=[stride, stride]))
        return out

    def relu(x, name):
        nodes.append(helper.make_node("Relu", [x], [name], name=name))
        return name

    a1 = relu(conv(0, "input", 1), "relu0")
    a2 = relu(conv(1, a1, 2), "relu1")
    a3 = relu(conv(2, a2, 1), "relu2")
    nodes.append(helper.make_node("Add", [conv(3, a3, 1), a2], ["add"], name="add"))
    a4 = relu("add", "relu3")
    nodes.append(helper.make_node("GlobalAveragePool", [a4], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"))
    nodes.append(helper.make_node("Gemm", ["flat", const("fc.w", net.fc_w), const("fc.b", net.fc_b)],
                                  ["logits"], name="fc", transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1))
    graph = helper.make_graph(
        nodes, "digits_resnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, SIDE, SIDE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, 10])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
