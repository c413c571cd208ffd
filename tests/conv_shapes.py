"""The conv and dense layer shapes of ResNet-50, VGG-16 and DenseNet-121, derived from the
architectures' definitions (torchvision's layouts, 224x224 input) rather than copied from a
table. A conv is (height, width, in_channels, out_channels, kernel, stride, pad); a dense
layer is (in_features, out_features). Used by the kernel tests and benchmarks."""

from __future__ import annotations

Conv = tuple[int, int, int, int, int, int, int]


def _out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def resnet50_convs(size: int = 224) -> list[Conv]:
    """Stem 7x7/2 + max pool 3x3/2, then bottleneck blocks (1x1, 3x3 with the stride, 1x1 x4)
    with a strided 1x1 projection on each stage's first block."""
    shapes = [(size, size, 3, 64, 7, 2, 3)]
    h = _out(_out(size, 7, 2, 3), 3, 2, 1)
    cin = 64
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for block in range(blocks):
            s = stride if block == 0 else 1
            ho = _out(h, 3, s, 1)
            shapes += [(h, h, cin, mid, 1, 1, 0), (h, h, mid, mid, 3, s, 1),
                       (ho, ho, mid, 4 * mid, 1, 1, 0)]
            if block == 0:
                shapes.append((h, h, cin, 4 * mid, 1, s, 0))
            h, cin = ho, 4 * mid
    return shapes


def resnet50_dense() -> list[tuple[int, int]]:
    return [(2048, 1000)]


VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")


def vgg16_convs(size: int = 224) -> list[Conv]:
    """3x3 pad 1 convs, a 2x2/2 max pool at each "M"."""
    shapes, h, cin = [], size, 3
    for item in VGG16_CONFIG:
        if item == "M":
            h //= 2
        else:
            shapes.append((h, h, cin, item, 3, 1, 1))
            cin = item
    return shapes


def vgg16_dense() -> list[tuple[int, int]]:
    return [(512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)]


def densenet121_convs(size: int = 224, growth: int = 32, bottleneck: int = 4) -> list[Conv]:
    """Stem 7x7/2 + max pool, four dense blocks of (1x1 -> 4*growth, 3x3 -> growth) layers
    reading the growing concat, 1x1 transitions halving the channels (then 2x2 avg pool)."""
    shapes = [(size, size, 3, 64, 7, 2, 3)]
    h = _out(_out(size, 7, 2, 3), 3, 2, 1)
    channels = 64
    for index, layers in enumerate((6, 12, 24, 16)):
        for _ in range(layers):
            shapes += [(h, h, channels, bottleneck * growth, 1, 1, 0),
                       (h, h, bottleneck * growth, growth, 3, 1, 1)]
            channels += growth
        if index < 3:
            shapes.append((h, h, channels, channels // 2, 1, 1, 0))
            channels //= 2
            h //= 2
    return shapes


def densenet121_dense() -> list[tuple[int, int]]:
    return [(1024, 1000)]
