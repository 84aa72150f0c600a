"""Benchmark shapes shared by the CPU and GPU suites and the report script."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bltriton import BLConv1d, BLConv2d


@dataclass(frozen=True)
class ConvShape:
    """One convolution layer: ``[N, C, *size]`` input, ``O`` filters of ``kernel``, ``padding``."""

    name: str
    n: int
    c: int
    o: int
    size: tuple[int, ...]
    kernel: int
    padding: int

    @property
    def ndim(self) -> int:
        return len(self.size)

    def with_batch(self, n: int) -> ConvShape:
        return ConvShape(self.name, n, self.c, self.o, self.size, self.kernel, self.padding)

    @property
    def id(self) -> str:
        size = "x".join(map(str, self.size))
        return f"{self.name}-n{self.n}-c{self.c}-o{self.o}-{size}-k{self.kernel}"


# The foundation's CPU shapes (batch as given; the GPU suite uses batch 128 for 2D).
SHAPES_2D = [
    ConvShape("cifar3x3", 32, 64, 64, (32, 32), 3, 1),
    ConvShape("cifar3x3-wide", 32, 128, 128, (16, 16), 3, 1),
    ConvShape("k7", 32, 64, 64, (32, 32), 7, 3),
    ConvShape("k11", 16, 32, 32, (64, 64), 11, 5),
]
SHAPES_1D = [
    ConvShape("fcn-k5", 32, 128, 256, (150,), 5, 2),
    ConvShape("long-k63", 16, 64, 64, (4096,), 63, 31),
]
# The paper's FCN layers (UCR-like length 150): kernels 8, 5, 3.
FCN_LAYERS = [
    ConvShape("fcn1-k8", 64, 1, 128, (150,), 8, 4),
    ConvShape("fcn2-k5", 64, 128, 256, (150,), 5, 2),
    ConvShape("fcn3-k3", 64, 256, 128, (150,), 3, 1),
]
# An almost empty layer: its fwd+bwd time is the per-call host cost (argument checks, plans,
# autograd, launches), which bounds a whole-model step on a GPU (bench/NOTES.md).
SHAPES_HOST = [ConvShape("host-tiny", 1, 4, 4, (8, 8), 3, 1)]
RATES = (0.0, 0.5, 0.75)


def make_layer(shape: ConvShape, impl: str, rate: float | None, device: torch.device) -> nn.Module:
    """The layer a benchmark times: ``"nn"`` (``nn.Conv*d``), ``"spatial"`` (the spatial
    algorithm) or a backend name (the spectral algorithm on that backend); seeded weights."""
    torch.manual_seed(0)
    conv_cls = nn.Conv2d if shape.ndim == 2 else nn.Conv1d
    conv = conv_cls(shape.c, shape.o, shape.kernel, padding=shape.padding).to(device)
    if impl == "nn":
        return conv
    bl_cls = BLConv2d if shape.ndim == 2 else BLConv1d
    if impl == "spatial":
        return bl_cls.from_conv(conv, compress_rate=rate, algorithm="spatial")
    return bl_cls.from_conv(conv, compress_rate=rate, backend=impl, algorithm="spectral")
