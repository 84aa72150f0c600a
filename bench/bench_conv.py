"""fwd+bwd of band-limited layers against torch's convolutions (pytest-benchmark).

CPU: the foundation's shapes at their own batch, torch path vs ``nn.Conv*d``; and an almost
empty layer (``host-tiny``) whose time is the per-call host cost.
CUDA: the 2D shapes at batch 128 and the FCN layers, triton vs torch path vs cuDNN (default flags).
The plain test command runs every benchmark once (``--benchmark-disable``) as a smoke test.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.roofline import mac_count
from bench.shapes import FCN_LAYERS, RATES, SHAPES_1D, SHAPES_2D, SHAPES_HOST, ConvShape, make_layer

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def _shapes() -> list[ConvShape]:
    if CUDA:
        return [s.with_batch(128) for s in SHAPES_2D] + SHAPES_1D + FCN_LAYERS + SHAPES_HOST
    return SHAPES_2D + SHAPES_1D + SHAPES_HOST


def _impls() -> list[str]:
    # "spatial": the spatial algorithm (library convolution); a backend name: the spectral one.
    return ["torch", "triton", "spatial"] if CUDA else ["torch", "spatial"]


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _layer(shape: ConvShape, impl: str, rate: float | None) -> nn.Module:
    return make_layer(shape, impl, rate, DEVICE)


def _fwd_bwd(layer: nn.Module, x: torch.Tensor, gy: torch.Tensor):
    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(gy)
        _sync()

    return step


CASES = [pytest.param(s, "nn", None, id=f"{s.id}-nn") for s in _shapes()] + [
    pytest.param(s, impl, r, id=f"{s.id}-{impl}-r{r}") for s in _shapes() for impl in _impls() for r in RATES
]


@pytest.mark.parametrize("shape,impl,rate", CASES)
def test_conv_fwd_bwd(benchmark, shape: ConvShape, impl: str, rate: float | None):
    layer = _layer(shape, impl, rate)
    x = torch.randn(shape.n, shape.c, *shape.size, device=DEVICE, requires_grad=True)
    y = layer(x)
    gy = torch.randn_like(y)
    benchmark.group = shape.id
    benchmark.extra_info.update({"impl": impl, "rate": rate, "device": str(DEVICE)})
    if impl != "nn":
        band = layer.last_band
        benchmark.extra_info["kept_fraction"] = band.kept_fraction
        count = mac_count("fwd", band.num_kept, shape.n, shape.c, shape.o, 1)
        benchmark.extra_info["mac_gflop_fwd_bwd"] = 3 * count.flops / 1e9
    benchmark.pedantic(_fwd_bwd(layer, x, gy), rounds=5 if not CUDA else 20, warmup_rounds=1, iterations=1)
